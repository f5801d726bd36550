// fastify-taskqueue: routes queue tasks, which are requests to other routes of the same app, and
// embedded consumers dispatch them with `fastify.inject()`. This file only wires the parts in lib/.
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import * as errors from './lib/errors'
import * as options from './lib/options'
import * as message from './lib/message'
import * as taskqueue from './lib/taskqueue'
import * as requestTasks from './lib/request-tasks'
import * as types from './types'
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

// fp() marks the very function it is given (name, Fastify range, no encapsulation) and returns it.
fp(fastifyTaskqueue, {
  fastify: '5.x',
  name: 'fastify-taskqueue'
})

// The package is CommonJS, so `export =` is what both layouts of an app see: require() and an ESM
// `import taskqueue from` (NodeNext) both get the plugin itself, with the named exports hanging
// from it, as with Fastify's own plugins. Every public name is a member of this namespace.
declare namespace fastifyTaskqueue {
  export { fastifyTaskqueue as default, fastifyTaskqueue }
  export import TaskConflictError = errors.TaskConflictError
  export import InvalidOptionError = errors.InvalidOptionError
  export import InvalidUrlError = errors.InvalidUrlError
  export import InvalidMethodError = errors.InvalidMethodError
  export import InvalidArgumentError = errors.InvalidArgumentError
  export import UnknownQueueError = errors.UnknownQueueError
  export import ClosedError = errors.ClosedError
  export import EnqueueFailedError = errors.EnqueueFailedError
  export import RedisUnavailableError = errors.RedisUnavailableError
  export import QueueFailedError = errors.QueueFailedError
  export import TaskQueuePluginOptionsSchema = options.TaskQueuePluginOptionsSchema
  export import TaskQueuePluginOptions = options.TaskQueuePluginOptions
  export import QueueOptions = options.QueueOptions
  export import ConsumerOptions = options.ConsumerOptions
  export import AddOptions = message.AddOptions
  // Classes of the plugin's own making: their types only.
  export type TaskQueueService = taskqueue.TaskQueueService
  export import QueueHandle = taskqueue.QueueHandle
  export type RequestTaskQueue = requestTasks.RequestTaskQueue
  export import TaskMethod = types.TaskMethod
  export import TaskMessage = types.TaskMessage
  export import DeadLetterReason = types.DeadLetterReason
  export import DeadLetter = types.DeadLetter
  export import DeadLetterCause = types.DeadLetterCause
  export import DeadLetterPage = types.DeadLetterPage
  export import ReservedTask = types.ReservedTask
  export import TaskReceiver = types.TaskReceiver
  export import QueueBackend = types.QueueBackend
  export import QueueBackendContext = types.QueueBackendContext
  export import QueueBackendFactory = types.QueueBackendFactory
  export import DispatchedTask = types.DispatchedTask
}

// Node's ESM loader finds the named exports of a CommonJS module by reading its source for
// `module.exports.name = ...`: so the plugin becomes module.exports here, and each value of the
// namespace above is set on it in that form (the `export =` below sets it again, unchanged).
module.exports = fastifyTaskqueue
module.exports.default = fastifyTaskqueue
module.exports.fastifyTaskqueue = fastifyTaskqueue
module.exports.TaskConflictError = errors.TaskConflictError
module.exports.InvalidOptionError = errors.InvalidOptionError
module.exports.InvalidUrlError = errors.InvalidUrlError
module.exports.InvalidMethodError = errors.InvalidMethodError
module.exports.InvalidArgumentError = errors.InvalidArgumentError
module.exports.UnknownQueueError = errors.UnknownQueueError
module.exports.ClosedError = errors.ClosedError
module.exports.EnqueueFailedError = errors.EnqueueFailedError
module.exports.RedisUnavailableError = errors.RedisUnavailableError
module.exports.QueueFailedError = errors.QueueFailedError
module.exports.TaskQueuePluginOptionsSchema = options.TaskQueuePluginOptionsSchema

export = fastifyTaskqueue
