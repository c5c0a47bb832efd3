/**
 * Kafka as the ledger's orderer: one channel = one single-partition topic, so every member reads the
 * same totally ordered stream (see /work/shared/DESIGN.md, "Ledger protocol"). The module takes a
 * broker list; callers read it from MEDBLOCK_KAFKA_BROKERS with parseBrokerList.
 */
export { createKafkaClient, DEFAULT_RETRY, parseBrokerList, quietLogCreator, type KafkaConnection } from './client.ts';
export { ChannelReplicationError, channelTopic, channelTopicConfig, ensureChannelTopic, type ChannelTopicOptions } from './topics.ts';
export { ChannelProducer, ChannelSendError, type OutgoingMessage } from './producer.ts';
export { ChannelConsumer, type ChannelConsumerOptions, type ChannelRecord } from './consumer.ts';
export { KafkaOrderer, type KafkaOrdererOptions } from './kafka-orderer.ts';
export { kafkaReachable } from './health.ts';
