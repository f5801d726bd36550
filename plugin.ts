// fastify-taskqueue: routes queue tasks, which are requests to other routes of the same app, and
// embedded consumers dispatch them with `fastify.inject()`. This file only wires the parts in lib/.
import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyPluginAsync } from 'fastify'
import { resolveOptions, resolveConsumer, type TaskQueuePluginOptions } from './lib/options'
import { createBackend } from './lib/queues'
import { TaskQueueService, closeBackends } from './lib/taskqueue'
import { onErrorHook, onRequestHook, onResponseHook, onSendHook, requestTaskQueue } from './lib/request-tasks'
import { hideTaskOnlyRoute } from './lib/hidden-routes'

async function fastifyTaskqueue (app: FastifyInstance, options: TaskQueuePluginOptions): Promise<void> {
  const resolved = resolveOptions(options)
  const backends = resolved.queues.map((queueOptions, index) => createBackend(queueOptions, index, app.log))
  const earlyQueues = resolved.queues.filter(({ enqueueMode }) => enqueueMode === 'before-response').map(({ queue }) => queue)
  const service = new TaskQueueService(app, app.log, backends, earlyQueues, resolved.headerPolicy)

  app.decorate('taskqueue', service)
  app.decorateRequest('taskqueue', {
    getter (this: import('fastify').FastifyRequest) { return requestTaskQueue(service, this) }
  })
  app.addHook('onRequest', onRequestHook(service))
  app.addHook('onError', onErrorHook())
  if (earlyQueues.length > 0) app.addHook('onSend', onSendHook(service))
  app.addHook('onResponse', onResponseHook(service))
  // Sees only the routes added after it: the plugin is registered before its task routes.
  app.addHook('onRoute', hideTaskOnlyRoute)

  // Ready only once every backend is: a Redis that cannot be reached fails `ready()`. Then every
  // backend is closed, those that did connect included: an open connection would keep the
  // process alive after its start-up failed.
  const started = await Promise.allSettled(backends.map(async (backend) => { await backend.ready?.() }))
  const failed = started.find((result) => result.status === 'rejected')
  if (failed !== undefined) {
    await closeBackends(backends, Date.now() + resolved.closeTimeout, app.log)
    throw failed.reason
  }

  app.addHook('onReady', async () => {
    const consumers = resolved.consumers ??
      backends.filter(({ shared }) => !shared).map(({ name }) => resolveConsumer({ queue: name }))
    service.startConsumers(consumers)
    await service.announceUnconsumed(new Set(consumers.map(({ queue }) => queue)))
  })
  // One deadline for the whole close: it starts as the consumers stop, and the last pushes and the
  // queues' close share it (see TaskQueueService.close).
  app.addHook('preClose', async () => { await service.stopConsumers(resolved.closeTimeout) })
  app.addHook('onClose', async () => { await service.close(resolved.closeTimeout) })
}

const taskqueue: FastifyPluginAsync<TaskQueuePluginOptions> = fp(fastifyTaskqueue, {
  fastify: '5.x',
  name: 'fastify-taskqueue'
})

export default taskqueue
export { taskqueue as fastifyTaskqueue }
export {
  TaskConflictError, InvalidOptionError, InvalidUrlError, InvalidMethodError, InvalidArgumentError, UnknownQueueError, ClosedError,
  EnqueueFailedError, RedisUnavailableError, QueueFailedError
} from './lib/errors'
export { TaskQueuePluginOptionsSchema } from './lib/options'
export type { TaskQueuePluginOptions, QueueOptions, ConsumerOptions } from './lib/options'
export type { AddOptions } from './lib/message'
export type { TaskQueueService, QueueHandle } from './lib/taskqueue'
export type { RequestTaskQueue } from './lib/request-tasks'
export type * from './types'

// CommonJS callers get the plugin itself from require(), as with every Fastify plugin, with the
// named exports hanging from it.
module.exports = Object.assign(taskqueue, exports)
