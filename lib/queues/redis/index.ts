// The Redis queue, shared by every instance that registers it and durable across process deaths.
// One concept per file: keys, connection, scripts (scripts/*.lua), the queue side (producer), the
// consumer side (receiver) and liveness. docs/redis-protocol.md describes the protocol.
export { RedisQueue } from './producer'
