// Prometheus metrics through prom-client. The counters and histograms are subscribers of the task
// channels (./channels.ts), each app's keeping to its own events; the queue gauges are read at
// scrape time from each queue's stats(). Apps of one process that register on the same registry
// share one set of metrics, removed from the registry when the last of those apps closes.
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { Counter, Gauge, Histogram, register as defaultRegistry, type Registry } from 'prom-client'
import type { FastifyBaseLogger } from 'fastify'
import type { QueueStats, TaskDeadEvent, TaskEventBase, TaskFinishedEvent, TaskQueue, TaskStartedEvent } from '../../types'
import type { MetricsRegistryLike } from '../options'
import { MetricsConflictError } from '../errors'
import { taskqueueChannels } from './channels'

const metricNames = [
  'taskqueue_tasks_enqueued_total', 'taskqueue_tasks_completed_total', 'taskqueue_tasks_retried_total', 'taskqueue_tasks_dead_total',
  'taskqueue_task_duration_seconds', 'taskqueue_task_wait_seconds', 'taskqueue_queue_tasks', 'taskqueue_queue_paused'
] as const

/** One try lasts up to taskTimeout (a minute by default): buckets from 5 ms to 5 minutes. */
const durationBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300]
/** A task may wait long behind a backlog: buckets from 10 ms to an hour. */
const waitBuckets = [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600]

/** The queue states of the gauge, each with its field of stats(). */
const gaugeStates = [['waiting', 'waiting'], ['delayed', 'delayed'], ['in_flight', 'inFlight'], ['dead', 'dead']] as const

interface Member {
  taskqueue: TaskQueue
  log: FastifyBaseLogger
}

/** The metrics on one registry, and the apps that use them. */
class SharedMetrics {
  readonly members = new Set<Member>()
  readonly enqueued: Counter<'queue'>
  readonly completed: Counter<'queue'>
  readonly retried: Counter<'queue'>
  readonly dead: Counter<'queue' | 'reason'>
  readonly duration: Histogram<'queue'>
  readonly wait: Histogram<'queue'>
  private readonly tasks: Gauge<'queue' | 'state'>
  private readonly paused: Gauge<'queue'>
  private readonly registry: MetricsRegistryLike
  /** The stats of a scrape being read: both gauges of one scrape wait for the same reading. */
  private reading: Promise<void> | undefined

  constructor (registry: MetricsRegistryLike) {
    this.registry = registry
    for (const name of metricNames) {
      if (registry.getSingleMetric(name) !== undefined) throw new MetricsConflictError(name)
    }
    const registers = [registry as unknown as Registry]
    const read = (): Promise<void> => this.readQueues()
    this.enqueued = new Counter({ name: 'taskqueue_tasks_enqueued_total', help: 'Tasks added to the queue by this process (retries and requeues are not)', labelNames: ['queue'], registers })
    this.completed = new Counter({ name: 'taskqueue_tasks_completed_total', help: 'Tries of this process answered with a 2xx or 3xx status', labelNames: ['queue'], registers })
    this.retried = new Counter({ name: 'taskqueue_tasks_retried_total', help: 'Retries stored by the consumers of this process', labelNames: ['queue'], registers })
    this.dead = new Counter({ name: 'taskqueue_tasks_dead_total', help: 'Tasks buried in the dead letters by this process', labelNames: ['queue', 'reason'], registers })
    this.duration = new Histogram({ name: 'taskqueue_task_duration_seconds', help: 'One try of a task, from its dispatch to its answer', labelNames: ['queue'], buckets: durationBuckets, registers })
    this.wait = new Histogram({ name: 'taskqueue_task_wait_seconds', help: 'From the time a try was due to its start', labelNames: ['queue'], buckets: waitBuckets, registers })
    this.tasks = new Gauge({ name: 'taskqueue_queue_tasks', help: 'Tasks of the queue by state, the queue\'s own figures (aggregate with max)', labelNames: ['queue', 'state'], registers, collect: read })
    this.paused = new Gauge({ name: 'taskqueue_queue_paused', help: '1 while the queue is paused, else 0 (aggregate with max)', labelNames: ['queue'], registers, collect: read })
  }

  private readQueues (): Promise<void> {
    this.reading ??= this.readStats().finally(() => { this.reading = undefined })
    return this.reading
  }

  /**
   * Reads every queue's stats() and sets the gauges to them alone: a queue that went away (its app
   * closed) leaves no stale figure. A backend without stats() gets no gauge; one that fails to
   * answer (a Redis that is down) is left out of this scrape, and said so.
   */
  private async readStats (): Promise<void> {
    const figures: Array<[string, QueueStats]> = []
    await Promise.all([...this.members].flatMap(({ taskqueue, log }) => taskqueue.queueNames.map(async (queue) => {
      try {
        figures.push([queue, await taskqueue.queue(queue).stats()])
      } catch (error) {
        if ((error as { code?: unknown }).code === 'FST_TASKQUEUE_UNSUPPORTED') return
        log.warn({ err: error, queue }, 'taskqueue: the queue\'s stats could not be read for its metrics')
      }
    })))
    this.tasks.reset()
    this.paused.reset()
    for (const [queue, stats] of figures) {
      for (const [state, field] of gaugeStates) this.tasks.set({ queue, state }, stats[field])
      this.paused.set({ queue }, stats.paused ? 1 : 0)
    }
  }

  /** The last app left: the metrics leave the registry, so that the next app can register anew. */
  remove (): void {
    for (const name of metricNames) this.registry.removeSingleMetric(name)
  }
}

const byRegistry = new WeakMap<MetricsRegistryLike, SharedMetrics>()

/**
 * Registers the metrics of one app on `registry` (prom-client's default one when undefined), or
 * joins those already there; resolves to what undoes it when the app closes. Throws
 * FST_TASKQUEUE_METRICS_CONFLICT for a registry that holds a metric of one of these names of
 * its own.
 */
export function registerMetrics (taskqueue: TaskQueue, registry: MetricsRegistryLike | undefined, log: FastifyBaseLogger): () => void {
  const target = registry ?? defaultRegistry as unknown as MetricsRegistryLike
  let shared = byRegistry.get(target)
  if (shared === undefined) {
    shared = new SharedMetrics(target)
    byRegistry.set(target, shared)
  }
  const member: Member = { taskqueue, log }
  shared.members.add(member)
  const metrics = shared
  const own = (message: unknown): message is TaskEventBase => (message as TaskEventBase).taskqueue === taskqueue
  const listeners: Array<[string, (message: unknown) => void]> = [
    [taskqueueChannels.enqueued, (message) => { if (own(message)) metrics.enqueued.inc({ queue: message.queue }) }],
    [taskqueueChannels.started, (message) => {
      if (own(message)) metrics.wait.observe({ queue: message.queue }, (message as TaskStartedEvent).waitMs / 1000)
    }],
    [taskqueueChannels.finished, (message) => {
      if (!own(message)) return
      const { queue, durationMs, statusCode } = message as TaskFinishedEvent
      metrics.duration.observe({ queue }, durationMs / 1000)
      if (statusCode !== undefined && statusCode >= 200 && statusCode < 400) metrics.completed.inc({ queue })
    }],
    [taskqueueChannels.retried, (message) => { if (own(message)) metrics.retried.inc({ queue: message.queue }) }],
    [taskqueueChannels.dead, (message) => {
      if (own(message)) metrics.dead.inc({ queue: message.queue, reason: (message as TaskDeadEvent).reason })
    }]
  ]
  for (const [name, listener] of listeners) subscribe(name, listener)
  return () => {
    for (const [name, listener] of listeners) unsubscribe(name, listener)
    metrics.members.delete(member)
    if (metrics.members.size > 0) return
    metrics.remove()
    byRegistry.delete(target)
  }
}
