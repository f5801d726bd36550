// issue 13, "Instrumentation", OpenTelemetry: with an SDK registered (the in-memory exporter and
// AsyncLocalStorage context manager of the OpenTelemetry SDK), add() keeps the trace context it ran
// in with the task, and each try runs inside a CONSUMER span `process <queue>` of that trace, as a
// child of the span that added the task and linked to it. The dispatched request carries the span
// in `traceparent` and runs with it active, so the app's own server spans nest inside it.
import tap, { test } from 'tap'
import { context, propagation, trace, ROOT_CONTEXT, SpanKind, SpanStatusCode, type Span } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { W3CTraceContextPropagator } from '@opentelemetry/core'
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base'
import { backendFor, queueTypes, startApp, waitFor } from './helpers/both-queues'
import { storedMessages } from './helpers/redis'

const exporter = new InMemorySpanExporter()
trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }))
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
propagation.setGlobalPropagator(new W3CTraceContextPropagator())
tap.teardown(() => {
  trace.disable()
  context.disable()
  propagation.disable()
})

const tracer = trace.getTracer('test')
const spans = (name: string): ReturnType<InMemorySpanExporter['getFinishedSpans']> => exporter.getFinishedSpans().filter((span) => span.name === name)

for (const type of queueTypes) {
  test(`${type}: issue 13, a task added inside a request's span runs in a process span of the same trace`, async (t) => {
    exporter.reset()
    const backend = await backendFor(type)
    const seen: Array<{ active: string | undefined, traceparent: unknown }> = []
    const app = await startApp(t, { queues: [backend.queue('mail')], consumers: [{ queue: 'mail' }] }, (app) => {
      // What @fastify/otel does for every request: a SERVER span from the request's headers.
      app.addHook('onRequest', async (request) => {
        const parent = propagation.extract(ROOT_CONTEXT, request.headers)
        const span = tracer.startSpan(`${request.method} ${request.routeOptions.url}`, { kind: SpanKind.SERVER }, parent)
        ;(request as unknown as { span: Span }).span = span
      })
      app.addHook('onResponse', async (request) => { (request as unknown as { span: Span }).span.end() })
      app.post('/signup', async (request) => {
        const span = (request as unknown as { span: Span }).span
        return await context.with(trace.setSpan(context.active(), span), async () => ({ id: request.taskqueue.add('/tasks/welcome', { queue: 'mail' }) }))
      })
      app.get('/tasks/welcome', async (request) => {
        seen.push({ active: trace.getActiveSpan()?.spanContext().spanId, traceparent: request.headers.traceparent })
        return 'ok'
      })
    })
    const id = (await app.inject({ method: 'POST', url: '/signup', payload: {} })).json().id
    await waitFor('the process span', () => spans('process mail').length === 1 && spans('GET /tasks/welcome').length === 1)
    const [signup] = spans('POST /signup')
    const [processSpan] = spans('process mail')
    const [server] = spans('GET /tasks/welcome')
    t.equal(processSpan.spanContext().traceId, signup.spanContext().traceId, 'the same trace as the request that added the task')
    t.equal(processSpan.parentSpanContext?.spanId, signup.spanContext().spanId, 'a child of the span that added it')
    t.same(processSpan.links.map((link) => link.context.spanId), [signup.spanContext().spanId], 'and linked to it')
    t.equal(processSpan.kind, SpanKind.CONSUMER)
    t.match(processSpan.attributes, {
      'messaging.destination.name': 'mail',
      'messaging.message.id': id,
      'messaging.operation.type': 'process',
      'messaging.taskqueue.retries': 0,
      'http.response.status_code': 200
    })
    t.equal(processSpan.status.code, SpanStatusCode.UNSET, 'a try that succeeded is no error')
    t.equal(server.parentSpanContext?.spanId, processSpan.spanContext().spanId, 'the server span of the dispatched request nests inside it')
    t.equal(server.spanContext().traceId, signup.spanContext().traceId)
    t.equal(seen[0].active, processSpan.spanContext().spanId, 'the handler runs with the process span active')
    t.match(seen[0].traceparent, new RegExp(`^00-${processSpan.spanContext().traceId}-${processSpan.spanContext().spanId}-01$`), 'traceparent names it')
  })

  test(`${type}: issue 13, a failed try has an error status, and each try its retry count`, async (t) => {
    exporter.reset()
    const backend = await backendFor(type)
    const app = await startApp(t, {
      queues: [backend.queue('default')],
      consumers: [{ queue: 'default', retryMaxCount: 2, retryDelay: { min: 5, max: 10 }, taskTimeout: 200 }]
    }, (app) => {
      let tries = 0
      app.get('/tasks/flaky', async (request, reply) => {
        tries++
        if (tries === 1) return reply.code(503).send()
        if (tries === 2) await new Promise((resolve) => setTimeout(resolve, 400))
        return 'ok'
      })
    })
    await app.taskqueue.add('/tasks/flaky')
    await waitFor('three tries', () => spans('process default').length === 3)
    const tries = spans('process default').sort((a, b) => Number(a.attributes['messaging.taskqueue.retries']) - Number(b.attributes['messaging.taskqueue.retries']))
    t.same(tries.map((span) => span.attributes['messaging.taskqueue.retries']), [0, 1, 2])
    t.match(tries[0].status, { code: SpanStatusCode.ERROR, message: 'answered 503' }, 'a 503: error')
    t.match(tries[1].status, { code: SpanStatusCode.ERROR, message: 'ran past taskTimeout' }, 'a timeout: error')
    t.equal(tries[2].status.code, SpanStatusCode.UNSET, 'the try that succeeded')
    t.equal(tries[0].parentSpanContext, undefined, 'a task added outside any span starts a trace of its own')
  })
}

test('redis: issue 13, the stored task keeps the trace context of add(), and a message without one stays as before', async (t) => {
  const backend = await backendFor('redis')
  const app = await startApp(t, { queues: [backend.queue('default')], consumers: [] })
  await tracer.startActiveSpan('producer', async (span) => {
    await app.taskqueue.add('/tasks/traced')
    span.end()
  })
  await app.taskqueue.add('/tasks/plain')
  const [plain, traced] = (await storedMessages(backend.redis(), backend.key('waiting'))).map((raw) => JSON.parse(raw))
  const [producer] = spans('producer')
  t.same(traced.trace, { traceparent: `00-${producer.spanContext().traceId}-${producer.spanContext().spanId}-01` }, 'the propagator\'s fields')
  t.notOk('trace' in plain, 'no trace field without an active span')
})

test('local: issue 13, an error of inject() is recorded on the span', async (t) => {
  exporter.reset()
  const backend = await backendFor('local')
  const app = await startApp(t, { queues: [backend.queue('default')], consumers: [{ queue: 'default', retryMaxCount: 0 }] })
  const inject = app.inject
  app.inject = (() => { throw new Error('inject broke') }) as unknown as typeof app.inject
  t.teardown(() => { app.inject = inject })
  await app.taskqueue.add('/tasks/any')
  await waitFor('the span', () => spans('process default').length === 1)
  const [span] = spans('process default')
  t.match(span.status, { code: SpanStatusCode.ERROR, message: 'inject broke' })
  t.match(span.events, [{ name: 'exception' }], 'the exception recorded')
})
