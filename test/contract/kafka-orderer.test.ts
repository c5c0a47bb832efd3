import { randomUUID } from 'node:crypto';
import { KafkaOrderer, parseBrokerList } from '../../src/adapters/kafka/index.ts';
import { describeWithEngine } from '../support/engines.ts';
import { ordererContract } from './orderer.contract.ts';

describeWithEngine('kafka', 'Kafka orderer', (address) => {
  const brokers = parseBrokerList(address);
  const channel = `test-${randomUUID().slice(0, 8)}`; // a new, empty topic per run
  // The shared test broker is one broker: one copy, acknowledged by that copy.
  ordererContract('kafka', () => KafkaOrderer.connect({ brokers, channel, replicationFactor: 1, minInsyncReplicas: 1 }));
});
