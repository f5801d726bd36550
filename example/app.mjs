// A small app that shows fastify-taskqueue at work on the default local queue: a sign-up answers
// at once and queues a welcome task, which the embedded consumer then runs as a request of its own.
//
//   npm start
//   curl -X POST -H 'content-type: application/json' -d '{"name":"Ada"}' http://127.0.0.1:3000/signup
import Fastify from 'fastify'
import taskqueue, { TaskConflictError } from 'fastify-taskqueue'

const app = Fastify({ logger: { level: 'info' } })
await app.register(taskqueue)

const welcomed = []
let mailServerBusy = true

app.post('/signup', {
  schema: { body: { type: 'object', required: ['name'], properties: { name: { type: 'string' } } } }
}, async (request) => {
  // Queued only once this response was sent successfully; the task gets this request's body
  // and headers, so it is authenticated like the request that queued it.
  const id = request.taskqueue.add('/tasks/welcome', { method: 'POST' })
  return { queued: id }
})

// Invisible to the outside (404); reachable only as a task dispatched by the consumer.
app.post('/tasks/welcome', { config: { taskOnly: true } }, async (request) => {
  const { id, retries } = request.taskqueue.task
  if (mailServerBusy) {
    // A conflict asks for the task to be dispatched again a little later.
    mailServerBusy = false
    throw new TaskConflictError()
  }
  welcomed.push(request.body.name)
  request.log.info({ taskId: id, retries }, `welcome mail sent to ${request.body.name}`)
  return { sent: true }
})

app.get('/welcomed', async () => ({ welcomed, waiting: await app.taskqueue.queue('default').length() }))

const port = Number(process.env.PORT ?? 3000)
await app.listen({ host: '127.0.0.1', port })

// Show the queue at work once, without a client: a sign-up through the app itself.
const response = await app.inject({ method: 'POST', url: '/signup', payload: { name: 'Ada' } })
app.log.info({ response: response.json() }, 'example sign-up answered at once; the welcome task runs next')
await app.taskqueue.drain()
app.log.info({ welcomed }, `the welcome task ran; try: curl -X POST -H 'content-type: application/json' -d '{"name":"Grace"}' http://127.0.0.1:${port}/signup`)

for (const signal of ['SIGINT', 'SIGTERM']) process.once(signal, () => { app.close() })
