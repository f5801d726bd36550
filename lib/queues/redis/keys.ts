// The keys of one queue. They all carry the hash tag `{queue}`, so that a Redis Cluster keeps a
// queue in one slot and its scripts may touch any of them; the keys a script derives itself
// (`base .. 'processing:' .. id`) carry the same tag. Their names are the stored layout: renaming
// one would strand the tasks of a running system.

export function keysOf (prefix: string, queue: string) {
  const base = `${prefix}:{${queue}}:`
  return {
    base,
    /** Messages waiting: added on the left, reserved from the right. */
    waiting: `${base}waiting`,
    /** Tasks recovered from expired consumers, each to be reserved alone. */
    recovered: `${base}recovered`,
    /** Retries and delayed tasks, scored by the Redis time (ms) they are due. */
    delayed: `${base}delayed`,
    /** Dead letters, newest first. */
    dead: `${base}dead`,
    /** Consumers that may own a processing list. */
    consumers: `${base}consumers`,
    /** Task id to how often it was recovered. */
    recoveries: `${base}recoveries`,
    /** Caller-chosen ids of live tasks. */
    names: `${base}names`,
    /** Who recovers expired consumers now. */
    lease: `${base}lease`,
    /** A consumer's own list: the tasks it reserved and has not settled. */
    processing: (consumerId: string) => `${base}processing:${consumerId}`,
    /** Present while the consumer lives. */
    heartbeat: (consumerId: string) => `${base}heartbeat:${consumerId}`
  }
}

export type QueueKeys = ReturnType<typeof keysOf>
