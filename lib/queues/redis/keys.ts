// The keys of one queue. They all carry the hash tag `{queue}`, so that a Redis Cluster keeps a
// queue in one slot and its scripts may touch any of them; the keys a script derives itself
// (`base .. 'processing:' .. id`) carry the same tag. Their names are the stored layout: renaming
// one would strand the tasks of a running system, so a change of layout takes a new version
// segment (`v2`), and an instance of another layout never reads these keys.

/** The version of the stored layout, a segment of every key. */
export const layoutVersion = 'v2'

export function keysOf (prefix: string, queue: string) {
  const base = `${prefix}:{${queue}}:${layoutVersion}:`
  return {
    base,
    /** Task id to its message, for every task waiting, delayed or in flight: also the live ids. */
    tasks: `${base}tasks`,
    /** Ids of the tasks waiting: added on the left, reserved from the right. */
    waiting: `${base}waiting`,
    /** Ids of the tasks recovered from expired consumers, each to be reserved alone. */
    recovered: `${base}recovered`,
    /** Ids of the retries and delayed tasks, scored by the Redis time (ms) they are due. */
    delayed: `${base}delayed`,
    /** Task id to the consumer that reserved it, for every task in flight. */
    inflight: `${base}inflight`,
    /** Task id to how many of its entries in `waiting` or `recovered` are cancelled; `#` the total. */
    cancelled: `${base}cancelled`,
    /** Dead letters, newest first. */
    dead: `${base}dead`,
    /** Task id to its newest dead letter, as `dead` holds it. */
    deadIndex: `${base}dead-index`,
    /**
     * Wake-up tokens, at most one: what idle consumers block on (BLPOP), each token waking one of
     * them. Pushed by the scripts that make a task reservable; a token carries nothing.
     */
    wake: `${base}wake`,
    /** Present while the queue is paused. */
    paused: `${base}paused`,
    /** With a rate limit: the Redis times (ms) of the latest tries started, newest first. */
    rateLog: `${base}rate-log`,
    /** Consumers that may own a processing list. */
    consumers: `${base}consumers`,
    /** Task id to how often it was recovered. */
    recoveries: `${base}recoveries`,
    /** Schedule name to the last tick (ms since the epoch) whose task any instance added. */
    schedules: `${base}schedules`,
    /** Who recovers expired consumers now. */
    lease: `${base}lease`,
    /** Group of each live grouped task (task id to group name): what settling a task reads. */
    groupOf: `${base}group-of`,
    /** Groups with waiting tasks and room, in turn (the next on the right); `*` is the ungrouped tasks' turn. */
    groupTurns: `${base}group-turns`,
    /** Groups with waiting tasks at their limit, set aside until one of their tasks leaves flight. */
    groupFull: `${base}group-full`,
    /** Group name to how many of its tasks are in flight. */
    groupInflight: `${base}group-inflight`,
    /** How many entries the group lists hold in all (tombstones included). */
    groupWaiting: `${base}group-waiting`,
    /** The ids of a group's waiting tasks: added on the left, reserved from the right. */
    group: (name: string) => `${base}group:${name}`,
    /** A consumer's own list: the ids of the tasks it reserved and has not settled. */
    processing: (consumerId: string) => `${base}processing:${consumerId}`,
    /** Present while the consumer lives. */
    heartbeat: (consumerId: string) => `${base}heartbeat:${consumerId}`
  }
}

export type QueueKeys = ReturnType<typeof keysOf>
