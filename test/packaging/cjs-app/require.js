// The README's `require('fastify-taskqueue')`, type-checked from JavaScript (checkJs) in a
// CommonJS app: compiled by test/tarball.test.ts against the packed tarball, never run.
'use strict'
const Fastify = require('fastify')
const taskqueue = require('fastify-taskqueue')
const { TaskConflictError, taskqueueDashboard } = require('fastify-taskqueue')

async function main () {
  const app = Fastify()
  await app.register(taskqueue, { queues: [{ queue: 'mail' }], consumers: [{ queue: 'mail' }] })
  await app.register(taskqueueDashboard, { prefix: '/admin/taskqueue' })
  // @ts-expect-error unknown top-level option
  await app.register(taskqueue, { queue: 'mail' })
  app.post('/tasks/welcome', { config: { taskOnly: true } }, async (request) => {
    if (request.taskqueue.task?.retries === 0) throw new TaskConflictError()
    return { ran: request.taskqueue.task?.id }
  })
  app.post('/signup', async (request) => ({ id: request.taskqueue.add('/tasks/welcome', { method: 'POST', queue: 'mail' }) }))
  await app.ready()
  /** @type {import('fastify-taskqueue').DeadLetter[]} */
  const dead = await app.taskqueue.queue('mail').dead()
  await app.close()
  return dead.length
}

module.exports = { main }
