// Type tests of what a user does NOT see: compiled by `npm run typecheck`, never run. `app.taskqueue`
// and `request.taskqueue` are the interfaces of types/index.ts, so the members of the classes in
// lib/ that implement them do not compile in a user's file. Each `@ts-expect-error` fails the type
// check if its line ever compiles, that is if an internal member leaks into the public types.
import Fastify from 'fastify'
import type { Static } from '@sinclair/typebox'
import taskqueue, { type AddOptions, type QueueHandle, type RequestTaskQueue, type TaskQueue } from '../../plugin'
import type { AddOptionsSchema } from '../../lib/message'

/** True only when A and B are the same type, not merely assignable. */
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false

function expectTrue<T extends true> (check?: T): T | undefined {
  return check
}

// The public AddOptions is written out for its readers; add() checks options against the schema.
// They must stay the same type, or the documented options and the checked ones drift apart.
expectTrue<Equal<AddOptions, Static<typeof AddOptionsSchema>>>()
// @ts-expect-error the check can fail: one option less is not the same type
expectTrue<Equal<Omit<AddOptions, 'delay'>, Static<typeof AddOptionsSchema>>>()

// The augmentation declares the interfaces, nothing more.
expectTrue<Equal<import('fastify').FastifyInstance['taskqueue'], TaskQueue>>()
expectTrue<Equal<import('fastify').FastifyRequest['taskqueue'], RequestTaskQueue>>()

export async function internals (): Promise<unknown[]> {
  const app = Fastify()
  await app.register(taskqueue)

  // The public members of app.taskqueue.
  const names: string[] = app.taskqueue.queueNames
  const id: Promise<string> = app.taskqueue.add('/tasks/one')
  const handle: QueueHandle = app.taskqueue.queue('default')
  const drained: Promise<void> = app.taskqueue.drain()

  // Internal members of the class behind app.taskqueue.
  // @ts-expect-error the registry of dispatch tokens is internal
  app.taskqueue.dispatchMarks.size // eslint-disable-line @typescript-eslint/no-unused-expressions
  // @ts-expect-error the consumers start when the app is ready, not on a user's call
  app.taskqueue.startConsumers([])
  // @ts-expect-error the consumers stop when the app closes
  await app.taskqueue.stopConsumers()
  // @ts-expect-error start() runs once the app is ready
  await app.taskqueue.start()
  // @ts-expect-error close() runs as the app closes
  await app.taskqueue.close()
  // @ts-expect-error messages are made by add()
  app.taskqueue.createMessage('/tasks/one', undefined, undefined)
  // @ts-expect-error the request hooks hand tasks over
  app.taskqueue.pushAfterResponse([])
  // @ts-expect-error the request hooks hand tasks over
  await app.taskqueue.pushNow([])
  // @ts-expect-error the request hooks hand tasks over
  app.taskqueue.takeEarlyTasks([])
  // @ts-expect-error the request side counts the requests that hold tasks
  app.taskqueue.holding(1)
  // @ts-expect-error the drain check runs when work finishes
  app.taskqueue.checkDrained()
  // @ts-expect-error the backends are private
  app.taskqueue.backends.size // eslint-disable-line @typescript-eslint/no-unused-expressions
  // @ts-expect-error the interface is read only
  app.taskqueue.queueNames = []
  // @ts-expect-error a queue handle's name is read only
  handle.name = 'other'

  app.post('/signup', async (request) => {
    const added: string = request.taskqueue.add('/tasks/one')
    const task = request.taskqueue.task
    // @ts-expect-error the tasks a request holds are internal
    const held = request.taskqueue.held
    // @ts-expect-error the held tasks are taken by the onResponse hook
    request.taskqueue.takeHeld()
    // @ts-expect-error the mark of a request is worked out by the plugin, not set
    request.taskqueue.task = null
    return { added, task, held }
  })

  await app.close()
  return [names, id, handle, drained]
}
