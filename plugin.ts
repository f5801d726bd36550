// fastify-taskqueue: routes queue tasks, which are requests to other routes of the same app, and
// embedded consumers dispatch them with `fastify.inject()`. This file only wires the parts in lib/.
import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import * as errors from './lib/errors'
import * as options from './lib/options'
import * as types from './types'
import { resolveOptions, type TaskQueuePluginOptions } from './lib/options'
import { createBackend } from './lib/queues'
import { TaskQueueService } from './lib/taskqueue'
import { requestTasks } from './lib/request/tasks'
import { onErrorHook, onRequestHook, onResponseHook, onSendHook } from './lib/request/hooks'
import { hideTaskOnlyRoute } from './lib/request/hidden-routes'
import { TaskEvents, taskqueueChannels } from './lib/instrumentation/channels'
import { bindTaskLogFields } from './lib/instrumentation/log-bindings'
import { registerMetrics } from './lib/instrumentation/metrics'
import * as dashboard from './lib/dashboard/plugin'

async function fastifyTaskqueue (app: FastifyInstance, pluginOptions: TaskQueuePluginOptions): Promise<void> {
  const resolved = resolveOptions(pluginOptions)
  const events = new TaskEvents()
  const backends = resolved.queues.map((queueOptions, index) => createBackend(queueOptions, index, app.log, events))
  const service = new TaskQueueService(app, backends, resolved, events)

  app.decorate('taskqueue', service)
  app.decorateRequest('taskqueue', {
    getter (this: FastifyRequest) { return requestTasks(service, this) }
  })
  bindTaskLogFields(app, service.dispatchMarks)
  app.addHook('onRequest', onRequestHook(service))
  app.addHook('onError', onErrorHook())
  if (resolved.queues.some(({ enqueueMode }) => enqueueMode === 'before-response')) app.addHook('onSend', onSendHook(service))
  app.addHook('onResponse', onResponseHook(service))
  // Sees only the routes added after it: the plugin is registered before its task routes.
  app.addHook('onRoute', hideTaskOnlyRoute)

  if (resolved.metrics !== undefined) {
    const unregister = registerMetrics(service, resolved.metrics.registry, app.log)
    app.addHook('onClose', async () => { unregister() })
  }

  // Ready only once every backend is: a Redis that cannot be reached fails `ready()`.
  await service.open()
  app.addHook('onReady', async () => { await service.start() })
  // One deadline for the whole close: it starts as the consumers stop, and the last pushes and the
  // queues' close share it (see TaskQueueService.close).
  app.addHook('preClose', async () => { await service.stopConsumers() })
  app.addHook('onClose', async () => { await service.close() })
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
  export import UnsupportedError = errors.UnsupportedError
  export import MetricsConflictError = errors.MetricsConflictError
  export import NotRegisteredError = errors.NotRegisteredError
  export import InvalidRequestError = errors.InvalidRequestError
  export import UnknownTaskError = errors.UnknownTaskError
  export import UnsupportedMediaTypeError = errors.UnsupportedMediaTypeError
  export import CrossSiteError = errors.CrossSiteError
  export import ScheduleFailedError = errors.ScheduleFailedError
  // The second plugin: a page and a JSON API to see and steer the queues (lib/dashboard/).
  export import taskqueueDashboard = dashboard.taskqueueDashboard
  export import TaskQueuePluginOptionsSchema = options.TaskQueuePluginOptionsSchema
  export import TaskQueuePluginOptions = options.TaskQueuePluginOptions
  export import QueueOptions = options.QueueOptions
  export import ConsumerOptions = options.ConsumerOptions
  export import ScheduleOptions = options.ScheduleOptions
  export import MetricsRegistryLike = options.MetricsRegistryLike
  // What `app.taskqueue`, `request.taskqueue` and a queue handle offer: interfaces, which the
  // classes in lib/ implement; the classes themselves are not public.
  export import TaskQueue = types.TaskQueue
  export import RequestTaskQueue = types.RequestTaskQueue
  export import QueueHandle = types.QueueHandle
  export import AddOptions = types.AddOptions
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
  export import QueueType = types.QueueType
  export import QueueStats = types.QueueStats
  export import TaskState = types.TaskState
  export import TaskInfo = types.TaskInfo
  export import TaskPage = types.TaskPage
  export import ScheduleInfo = types.ScheduleInfo
  export import ScheduleTick = types.ScheduleTick
  // The diagnostics channels of the task lifecycle: their names, and the message of each.
  export import TaskQueueChannelNames = types.TaskQueueChannelNames
  export import TaskEventBase = types.TaskEventBase
  export import TaskEnqueuedEvent = types.TaskEnqueuedEvent
  export import TaskStartedEvent = types.TaskStartedEvent
  export import TaskOutcome = types.TaskOutcome
  export import TaskNextStep = types.TaskNextStep
  export import TaskFinishedEvent = types.TaskFinishedEvent
  export import TaskRetriedEvent = types.TaskRetriedEvent
  export import TaskDeadEvent = types.TaskDeadEvent
  export import TaskRecoveredEvent = types.TaskRecoveredEvent
  export import TaskCancelledEvent = types.TaskCancelledEvent
  export const taskqueueChannels: Readonly<types.TaskQueueChannelNames>
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
module.exports.UnsupportedError = errors.UnsupportedError
module.exports.MetricsConflictError = errors.MetricsConflictError
module.exports.NotRegisteredError = errors.NotRegisteredError
module.exports.InvalidRequestError = errors.InvalidRequestError
module.exports.UnknownTaskError = errors.UnknownTaskError
module.exports.UnsupportedMediaTypeError = errors.UnsupportedMediaTypeError
module.exports.CrossSiteError = errors.CrossSiteError
module.exports.ScheduleFailedError = errors.ScheduleFailedError
module.exports.taskqueueDashboard = dashboard.taskqueueDashboard
module.exports.TaskQueuePluginOptionsSchema = options.TaskQueuePluginOptionsSchema
module.exports.taskqueueChannels = taskqueueChannels

export = fastifyTaskqueue
