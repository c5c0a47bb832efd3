/** Readiness probe: can the ordering service's brokers be reached and answer metadata? */
import { createKafkaClient, type KafkaConnection } from './client.ts';

export async function kafkaReachable(connection: KafkaConnection, timeoutMs = 3000): Promise<boolean> {
  const admin = createKafkaClient({ ...connection, retry: { retries: 0 } }).admin();
  const timeout = new Promise<boolean>((resolve) => setTimeout(() => resolve(false), timeoutMs).unref());
  const probe = (async () => {
    try {
      await admin.connect();
      await admin.listTopics();
      return true;
    } catch {
      return false;
    } finally {
      await admin.disconnect().catch(() => {});
    }
  })();
  return Promise.race([probe, timeout]);
}
