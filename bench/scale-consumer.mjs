// A consumer process of the scale-out rows: bench/scale.mjs keeps 4 of them and times runs of 1, 2
// or 4. For each run the process opens an app with the plugin consuming Redis queues that are
// already filled, whose task route waits `taskMs` ms (as a task waiting on a mail provider or
// another service would), and holds its tasks until the parent says "start", so that start-up
// (connecting, the first reservations) is not timed; the app is closed after the run.
//
// Once, when it starts, the process warms up on a queue of its own: `warmup` tasks it adds and
// dispatches at once (no wait), so that the timed runs use compiled code, as a long-lived consumer
// does. A cold process spent about 1.4 times the CPU per task over its first 3,000 tasks.
//
// IPC, parent to child: { open: { queues, prefix } }, 'start', 'cpu', 'close', 'exit'. Child to
// parent: { warm } after the warm-up; { ready } once the app is ready and every slot of its
// consumers holds a task; { done } (tasks answered in this run) at most every 20 ms while tasks
// finish; { cpu, lastDoneAt } (µs of CPU since 'start', the Date.now() of the last task answered,
// which ends the clock); { closed }.
import { setTimeout as sleep } from 'node:timers/promises'
import Fastify from 'fastify'
import taskqueue from 'fastify-taskqueue'
import { Cluster } from 'ioredis'
import { taskOptions } from './common.mjs'

const { concurrentLimit, taskMs, warmup, warmPrefix, redis, clusterNodes } = JSON.parse(process.argv[2])
const taskUrl = '/tasks/io'

// A consumer whose parent is gone (a failed or interrupted run) must not linger.
process.on('disconnect', () => process.exit(1))

const client = clusterNodes === undefined ? undefined : new Cluster(clusterNodes)
client?.on('error', () => {})
const connection = client === undefined ? redis : { client }

async function until (what, check) {
  const deadline = Date.now() + 60_000
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`scale consumer: no ${what} within 60 s`)
    await sleep(5)
  }
}

async function queueApp (queues, prefix) {
  const app = Fastify({ logger: false })
  await app.register(taskqueue, {
    queues: queues.map((queue) => ({ queue, type: 'redis', prefix, ...connection })),
    consumers: queues.map((queue) => ({ queue, concurrentLimit }))
  })
  return app
}

async function warmUp () {
  const queue = `warm-${process.pid}`
  const app = await queueApp([queue], warmPrefix)
  let answered = 0
  app.post(taskUrl, { config: { taskOnly: true } }, async (request, reply) => {
    answered++
    reply.code(204)
  })
  await app.ready()
  for (let start = 0; start < warmup; start += 500) {
    const batch = []
    for (let i = start; i < Math.min(warmup, start + 500); i++) batch.push(app.taskqueue.add(taskUrl, { ...taskOptions(i), queue }))
    await Promise.all(batch)
  }
  await until('warm-up', () => answered >= warmup)
  await app.close()
}

/** The app of one timed run, ready with a task held in each slot; its clock starts with `start()`. */
async function openRun ({ queues, prefix }) {
  let openGate
  const gate = new Promise((resolve) => { openGate = resolve })
  const run = { done: 0, lastDoneAt: 0, cpuAtStart: undefined }
  let held = 0
  let reportQueued = false
  // A message per task cost more CPU than the task itself (a write on the IPC pipe each): the
  // parent only needs the counts to see the queues drained, the time of the last task comes later.
  const report = () => {
    reportQueued = false
    process.send({ done: run.done })
  }
  const app = await queueApp(queues, prefix)
  app.post(taskUrl, { config: { taskOnly: true } }, async (request, reply) => {
    held++
    await gate
    await sleep(taskMs)
    run.done++
    run.lastDoneAt = Date.now()
    if (!reportQueued) {
      reportQueued = true
      setTimeout(report, 20)
    }
    reply.code(204)
  })
  await app.ready()
  const slots = queues.length * concurrentLimit
  await until(`task in each of the ${slots} slots`, () => held >= slots)
  run.app = app
  run.start = () => {
    run.cpuAtStart = process.cpuUsage()
    openGate()
  }
  return run
}

let run
const commands = {
  async open (options) {
    run = await openRun(options)
    return { ready: true }
  },
  start () {
    run.start()
  },
  cpu () {
    const { user, system } = process.cpuUsage(run.cpuAtStart)
    return { cpu: user + system, lastDoneAt: run.lastDoneAt }
  },
  async close () {
    await run?.app.close()
    run = undefined
    return { closed: true }
  },
  async exit () {
    await run?.app.close()
    client?.disconnect()
    process.exit(0)
  }
}

// One command at a time, in the order sent.
let queue = Promise.resolve()
process.on('message', (message) => {
  const [name, argument] = typeof message === 'string' ? [message] : Object.entries(message)[0]
  queue = queue.then(async () => {
    const reply = await commands[name](argument)
    if (reply !== undefined) process.send(reply)
  }).catch((error) => {
    console.error(error)
    process.exit(1)
  })
})

await warmUp()
process.send({ warm: true })
