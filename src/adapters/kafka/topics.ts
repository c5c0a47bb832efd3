/**
 * One ledger channel = one Kafka topic with exactly ONE partition, so Kafka gives the channel a total
 * order (Fabric's Kafka orderer design). The topic is created with explicit durability settings rather
 * than the broker's defaults (which would allow unclean leader election on some clusters and delete
 * data after 7 days), and an existing topic is checked against them: a channel whose topic has more
 * partitions, fewer replicas, a finite retention or another message size limit is refused, never
 * silently used.
 */
import kafkajs from 'kafkajs';
import type { Admin } from 'kafkajs';
import { MAX_RECORD_BYTES } from '../../ledger/orderer.ts';
import { createKafkaClient, type KafkaConnection } from './client.ts';

export interface ChannelTopicOptions extends KafkaConnection {
  channel: string;
  /** Copies of the partition; production uses 3 (the default), a single test broker 1. */
  replicationFactor?: number;
  /** Copies that must have a message before it is acknowledged (`acks=all`); 2 by default, 1 on one broker. */
  minInsyncReplicas?: number;
}

/**
 * The channel topic's replication factor does not fit: the cluster refused to create the topic with more
 * replicas than it has brokers (`available`: the brokers), or the existing topic has another replication
 * factor (`available`: its replicas). Callers turn it into advice on their own settings.
 */
export class ChannelReplicationError extends Error {
  override name = 'ChannelReplicationError';
  constructor(message: string, readonly available: number, options?: ErrorOptions) {
    super(message, options);
  }
}

/** Kafka's legal topic names. The channel name is the topic name, unchanged. */
const TOPIC_NAME = /^[A-Za-z0-9._-]{1,249}$/;

export function channelTopic(channel: string): string {
  if (!TOPIC_NAME.test(channel) || channel === '.' || channel === '..' || channel.startsWith('__')) {
    throw new Error(`invalid channel name ${JSON.stringify(channel)}: use 1-249 of [A-Za-z0-9._-], not starting with "__"`);
  }
  return channel;
}

/**
 * The largest record batch (one produce request's messages) a channel topic accepts: the topic's
 * `max.message.bytes`, and what consumers fetch at once. Twice the orderer's MAX_RECORD_BYTES, so the
 * largest record fits in a batch with room to spare; the broker's default (about 1 MiB) would refuse
 * a 1 MiB envelope.
 */
export const CHANNEL_MAX_BATCH_BYTES = 2 * MAX_RECORD_BYTES;

/** The topic-level settings every channel topic must have. */
export function channelTopicConfig(minInsyncReplicas: number): Record<string, string> {
  return {
    'min.insync.replicas': String(minInsyncReplicas),
    'max.message.bytes': String(CHANNEL_MAX_BATCH_BYTES),
    'unclean.leader.election.enable': 'false',
    'retention.ms': '-1',
    'retention.bytes': '-1',
    'cleanup.policy': 'delete',
    // The broker stamps each record: the orderer time members bound envelope timestamps by, which a producer cannot set.
    'message.timestamp.type': 'LogAppendTime',
  };
}

/**
 * Creates the channel's topic if it does not exist, then checks the topic (new or old) has one partition,
 * the replication factor and the settings above. Resolves to whether this call created it.
 */
export async function ensureChannelTopic(options: ChannelTopicOptions): Promise<{ topic: string; created: boolean }> {
  const topic = channelTopic(options.channel);
  const replicationFactor = options.replicationFactor ?? 3;
  const minInsyncReplicas = options.minInsyncReplicas ?? 2;
  if (!Number.isInteger(replicationFactor) || replicationFactor < 1) throw new Error(`invalid replicationFactor ${replicationFactor}`);
  if (!Number.isInteger(minInsyncReplicas) || minInsyncReplicas < 1 || minInsyncReplicas > replicationFactor) {
    throw new Error(`invalid minInsyncReplicas ${minInsyncReplicas} (1..replicationFactor)`);
  }
  const config = channelTopicConfig(minInsyncReplicas);
  const admin = createKafkaClient(options).admin();
  await admin.connect();
  try {
    // Creating an existing topic works too, but kafkajs then logs the broker's refusal: look first.
    const exists = (await admin.listTopics()).includes(topic);
    const created = !exists && await admin.createTopics({
      topics: [{
        topic, numPartitions: 1, replicationFactor,
        configEntries: Object.entries(config).map(([name, value]) => ({ name, value })),
      }],
      waitForLeaders: true,
    }).catch(async (err: Error & { errors?: Array<Error & { type?: string }> }) => {
      // kafkajs reports the broker's reasons only inside an aggregate "Topic creation errors".
      const reasons = err.errors?.map((e) => e.message).join('; ') || err.message;
      const message = `creating Kafka topic "${topic}" (1 partition, replication factor ${replicationFactor}) failed: ${reasons}`;
      if (err.errors?.some((e) => e.type === 'INVALID_REPLICATION_FACTOR')) {
        const brokers = (await admin.describeCluster()).brokers.length;
        throw new ChannelReplicationError(`${message} (the cluster has ${brokers} broker${brokers === 1 ? '' : 's'})`,
          brokers, { cause: err });
      }
      throw new Error(message, { cause: err });
    });
    await verifyChannelTopic(admin, topic, replicationFactor, config);
    return { topic, created };
  } finally {
    await admin.disconnect();
  }
}

async function verifyChannelTopic(admin: Admin, topic: string, replicationFactor: number,
  config: Record<string, string>): Promise<void> {
  const problems: string[] = [];
  const { topics } = await admin.fetchTopicMetadata({ topics: [topic] });
  const partitions = topics[0]?.partitions ?? [];
  if (partitions.length !== 1) {
    problems.push(`it has ${partitions.length} partitions, a channel needs exactly 1 (total order)`);
  }
  const replicas = partitions[0]?.replicas.length ?? 0;
  const replicationProblem = partitions.length > 0 && replicas !== replicationFactor;
  if (replicationProblem) problems.push(`replication factor is ${replicas}, expected ${replicationFactor}`);

  const described = await admin.describeConfigs({
    resources: [{ type: kafkajs.ConfigResourceTypes.TOPIC, name: topic, configNames: Object.keys(config) }],
    includeSynonyms: false,
  });
  const actual = new Map(described.resources[0]?.configEntries.map((e) => [e.configName, e.configValue]) ?? []);
  for (const [name, expected] of Object.entries(config)) {
    if (actual.get(name) !== expected) problems.push(`${name} is ${JSON.stringify(actual.get(name) ?? null)}, expected "${expected}"`);
  }
  if (problems.length) {
    const message = `Kafka topic "${topic}" cannot be used as a ledger channel: ${problems.join('; ')}`;
    throw replicationProblem ? new ChannelReplicationError(message, replicas) : new Error(message);
  }
}
