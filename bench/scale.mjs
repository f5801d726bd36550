// Scale-out rows (issue 15): I/O-bound tasks (the route waits 20 ms, then answers) dispatched by 1, 2
// and 4 consumer processes (bench/scale-consumer.mjs), first from one Redis queue, then from three
// queues on the three masters of a throwaway Redis Cluster, every process consuming the three.
// Runs from run.mjs's process: it only fills the queues, forks the consumers and keeps the time.
import { fork } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import Fastify from 'fastify'
import taskqueue from 'fastify-taskqueue'
import { Cluster } from 'ioredis'
import { deletePrefix, median, redisClient, redisCpu, taskOptions } from './common.mjs'
import { startRedisCluster } from './redis-cluster.mjs'

const here = dirname(fileURLToPath(import.meta.url))
export const ioTaskUrl = '/tasks/io'

// Every consumer process alive, killed if this process exits before it closed them.
const live = new Set()
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL')
})

/**
 * Forks a consumer process and resolves once it has warmed up, with `{ child, done, onDone, send,
 * ask, exited }`: `done` is how many tasks its route answered in the current run, as last
 * reported (`onDone` is called then); `ask(command)` resolves with the child's reply.
 */
function startWorker (params) {
  return new Promise((resolve, reject) => {
    const child = fork(join(here, 'scale-consumer.mjs'), [JSON.stringify(params)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    live.add(child)
    const replies = []
    const exited = new Promise((resolve) => child.once('exit', (code, signal) => {
      live.delete(child)
      resolve(`code ${code}, signal ${signal}`)
    }))
    const worker = {
      child,
      done: 0,
      onDone: () => {},
      exited,
      send: (command) => child.send(command),
      // A child that dies while a reply is awaited fails the call instead of leaving it waiting.
      ask: (command) => Promise.race([
        new Promise((resolve) => {
          replies.push(resolve)
          child.send(command)
        }),
        exited.then((how) => { throw new Error(`scale consumer exited (${how})`) })
      ])
    }
    child.once('error', reject)
    exited.then((how) => reject(new Error(`scale consumer exited before it was warm (${how})`)))
    child.on('message', (message) => {
      if (message.warm === true) resolve(worker)
      else if (message.done !== undefined) {
        worker.done = message.done
        worker.onDone()
      } else replies.shift()?.(message)
    })
  })
}

/** Stops a consumer process, killing it if it has not exited within 15 s. */
async function stopWorker ({ child, exited }) {
  if (!live.has(child)) return
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000)
  if (child.connected) child.send('exit')
  else child.kill('SIGKILL')
  await exited
  clearTimeout(timer)
}

/**
 * Starts `count` warmed-up consumer processes, gives them to `use`, and stops them whatever
 * happens (a child that never got warm too).
 */
async function withWorkers (count, params, use) {
  const workers = []
  try {
    await Promise.all(Array.from({ length: count }, () => startWorker(params).then((worker) => workers.push(worker))))
    return await use(workers)
  } finally {
    await Promise.all(workers.map(stopWorker))
    for (const child of live) child.kill('SIGKILL')
  }
}

/** Queues `n` tasks of the usual shape (18 headers, a JSON body) on each of `queues`, through a producer app. */
async function fill (queueOptions, queues, n) {
  const producer = Fastify({ logger: false })
  await producer.register(taskqueue, { queues: queues.map((queue) => ({ queue, type: 'redis', ...queueOptions })), consumers: [] })
  producer.post(ioTaskUrl, { config: { taskOnly: true } }, async (request, reply) => { reply.code(204) })
  await producer.ready()
  try {
    for (const queue of queues) {
      for (let start = 0; start < n; start += 500) {
        const batch = []
        for (let i = start; i < Math.min(n, start + 500); i++) batch.push(producer.taskqueue.add(ioTaskUrl, { ...taskOptions(i), queue }))
        await Promise.all(batch)
      }
      const length = await producer.taskqueue.queue(queue).length()
      if (length !== n) throw new Error(`scale: queue ${queue} holds ${length} tasks after the fill, expected ${n}`)
    }
  } finally {
    await producer.close()
  }
}

/**
 * One timed run: `n` tasks on each queue, the `workers` given each open an app on them and get
 * ready, then the clock runs from "start" to the last task answered. `target` says where the
 * queues are: `queues`, `queueOptions` (for the producer and the check), `serverCpu()`, `clean(prefix)`.
 */
async function timedRun (target, workers, { n, prefix }) {
  const queueOptions = { ...target.queueOptions, prefix }
  const total = n * target.queues.length
  try {
    await fill(queueOptions, target.queues, n)
    let drained
    const allDone = new Promise((resolve) => { drained = resolve })
    for (const worker of workers) {
      worker.done = 0
      worker.onDone = () => {
        if (workers.reduce((sum, { done }) => sum + done, 0) >= total) drained()
      }
    }
    await Promise.all(workers.map(({ ask }) => ask({ open: { queues: target.queues, prefix } })))
    // A consumer that dies mid-run fails the run instead of leaving it waiting.
    const died = Promise.race(workers.map(({ exited }) => exited.then((how) => {
      throw new Error(`scale consumer exited during the run (${how})`)
    })))
    died.catch(() => {})
    let timer
    const timeout = new Promise((resolve, reject) => {
      timer = setTimeout(() => reject(new Error('scale: the queues were not drained within 5 minutes')), 300_000)
    })
    const serverCpuBefore = await target.serverCpu()
    // Date.now(): one clock for this process and the consumers, which time their own last task.
    const started = Date.now()
    for (const { send } of workers) send('start')
    await Promise.race([allDone, died, timeout]).finally(() => clearTimeout(timer))
    const serverCpu = await target.serverCpu() - serverCpuBefore
    const replies = await Promise.all(workers.map(({ ask }) => ask('cpu')))
    const appCpu = replies.reduce((sum, { cpu }) => sum + cpu, 0)
    const ended = Math.max(...replies.map(({ lastDoneAt }) => lastDoneAt))
    await Promise.all(workers.map(({ ask }) => ask('close')))
    // Every task answered exactly once, and nothing left in any queue.
    const answered = workers.reduce((sum, { done }) => sum + done, 0)
    if (answered !== total) throw new Error(`scale: ${answered} task requests answered for ${total} tasks`)
    await checkEmpty(target.queues, queueOptions)
    const seconds = (ended - started) / 1000
    return { rate: total / seconds, seconds, cpu: (appCpu + serverCpu) / total, serverCpu: serverCpu / total }
  } finally {
    await target.clean(prefix)
  }
}

/** Fails when any of `queues` still holds a task (waiting, delayed, in flight or dead). */
async function checkEmpty (queues, queueOptions) {
  const app = Fastify({ logger: false })
  await app.register(taskqueue, { queues: queues.map((queue) => ({ queue, type: 'redis', ...queueOptions })), consumers: [] })
  await app.ready()
  try {
    for (const queue of queues) {
      const { waiting, delayed, inFlight, dead } = await app.taskqueue.queue(queue).stats()
      if (waiting + delayed + inFlight + dead > 0) {
        throw new Error(`scale: queue ${queue} not empty after the run: ${JSON.stringify({ waiting, delayed, inFlight, dead })}`)
      }
    }
  } finally {
    await app.close()
  }
}

/**
 * Runs every process count `reps` times, interleaved (1, 2, 4, 1, 2, 4...), so that each ratio to
 * one process compares runs made moments apart; medians of tasks/s, CPU and ratios. The processes
 * are started and warmed up once; a run of K uses the first K of them.
 */
async function interleaved (target, { n, reps, processes, concurrentLimit, taskMs, warmup, prefix }, progress) {
  const runs = Object.fromEntries(processes.map((count) => [count, []]))
  const params = { concurrentLimit, taskMs, warmup, warmPrefix: `${prefix}-warm`, ...target.consumerParams }
  try {
    await withWorkers(Math.max(...processes), params, async (workers) => {
      for (let r = 0; r < reps; r++) {
        for (const count of processes) {
          const run = await timedRun(target, workers.slice(0, count), { n, prefix: `${prefix}-${r}-${count}` })
          progress?.(`  ${target.queues.length} queue(s), ${count} process(es), rep ${r + 1}/${reps}: ${Math.round(run.rate)} tasks/s in ${run.seconds.toFixed(1)} s`)
          runs[count].push(run)
        }
      }
    })
  } finally {
    await target.clean(`${prefix}-warm`)
  }
  const one = runs[processes[0]]
  return Object.fromEntries(processes.map((count) => [count, {
    rate: median(runs[count].map(({ rate }) => rate)),
    cpu: median(runs[count].map(({ cpu }) => cpu)),
    serverCpu: median(runs[count].map(({ serverCpu }) => serverCpu)),
    ratio: median(runs[count].map(({ rate }, r) => rate / one[r].rate)),
    runs: runs[count].map(({ rate }) => Math.round(rate))
  }]))
}

/** One Redis queue (`default`) on the benchmark's Redis, under `prefix`. */
export async function scaleOneQueue ({ redis, prefix, ...config }, progress) {
  const client = redisClient(redis)
  const queues = ['default']
  try {
    return await interleaved({
      queues,
      queueOptions: redis,
      consumerParams: { redis },
      serverCpu: () => redisCpu(client),
      clean: (runPrefix) => deletePrefix(client, runPrefix)
    }, { ...config, prefix }, progress)
  } finally {
    client.disconnect()
  }
}

/**
 * Three queues, one on each master of a throwaway cluster (their `{queue}` hash tags chosen by
 * CLUSTER KEYSLOT), every consumer process consuming all three. Resolves to `{ skipped }` when no
 * cluster can be started.
 */
export async function scaleCluster ({ prefix, ...config }, progress) {
  const cluster = await startRedisCluster()
  if (cluster.skipped !== undefined) return cluster
  let producerClient
  try {
    const queues = await queuesOnEveryMaster(cluster)
    progress?.(`  redis cluster ${cluster.version} on ports ${cluster.nodes.map(({ port }) => port).join(', ')}; queues ${queues.join(', ')}`)
    const admins = cluster.admins()
    // The producer's and the check's Cluster client; the plugin never closes a client handed in.
    producerClient = new Cluster(cluster.nodes)
    producerClient.on('error', () => {})
    const result = await interleaved({
      queues,
      queueOptions: { client: producerClient },
      consumerParams: { clusterNodes: cluster.nodes },
      serverCpu: async () => (await Promise.all(admins.map(redisCpu))).reduce((sum, cpu) => sum + cpu, 0),
      // Keys of different slots cannot go in one UNLINK on a cluster: each master deletes its own, one by one.
      clean: async (runPrefix) => {
        for (const admin of admins) {
          let cursor = '0'
          do {
            const [next, keys] = await admin.scan(cursor, 'MATCH', `${runPrefix}:*`, 'COUNT', 1000)
            cursor = next
            if (keys.length > 0) await Promise.all(keys.map((key) => admin.unlink(key)))
          } while (cursor !== '0')
        }
      }
    }, { ...config, prefix }, progress)
    return { ...result, queues, version: cluster.version }
  } finally {
    producerClient?.disconnect()
    await cluster.stop()
  }
}

/** Three queue names whose hash tags fall on the three masters, one each. */
async function queuesOnEveryMaster (cluster) {
  const chosen = []
  for (let i = 0; i < 100; i++) {
    const name = `io-${i}`
    const master = cluster.indexOfSlot(await cluster.keyslot(`{${name}}`))
    chosen[master] ??= name
    if (chosen.filter(Boolean).length === cluster.nodes.length) return chosen
  }
  throw new Error('scale: found no queue name for every master of the cluster')
}
