// OpenTelemetry, through its API alone: a no-op until the app registers an SDK. add() keeps the
// trace context it ran in with the task, through the app's propagator; each try then runs inside a
// CONSUMER span `process <queue>` that continues that trace, and the dispatched request carries the
// span's context in its headers, so that the app's own server spans nest inside it.
import { context, propagation, trace, isSpanContextValid, ROOT_CONTEXT, SpanKind, SpanStatusCode, type Context, type Span } from '@opentelemetry/api'
import type { TaskMessage } from '../../types'
import type { TryResult } from '../consumer/retry-policy'

const tracerName = 'fastify-taskqueue'

/** The active trace context as the app's propagator writes it; undefined when it writes nothing. */
export function traceCarrier (): Record<string, string> | undefined {
  const carrier: Record<string, string> = {}
  propagation.inject(context.active(), carrier)
  return Object.keys(carrier).length === 0 ? undefined : carrier
}

/** The span of one try, the context it is active in, and the headers that carry it. */
export interface TrySpan {
  readonly span: Span
  readonly context: Context
  readonly headers: Record<string, string>
}

/**
 * Starts the span of one try of `message`, or returns undefined when nothing traces (no SDK: the
 * span the API gives has no valid context). The span is a child of the context stored by add()
 * and links to it too: the messaging conventions ask for the link (it survives a batch) and allow
 * the parent for one message, which keeps a task in the trace of the request that added it.
 */
export function startTrySpan (message: TaskMessage): TrySpan | undefined {
  const parent = message.trace === undefined ? ROOT_CONTEXT : propagation.extract(ROOT_CONTEXT, message.trace)
  const creation = trace.getSpanContext(parent)
  // The tracer is asked for on each try: one kept from before the app registered its SDK (or from a
  // provider since replaced) would keep tracing nothing, or into the old one.
  const span = trace.getTracer(tracerName).startSpan(`process ${message.queue}`, {
    kind: SpanKind.CONSUMER,
    attributes: {
      'messaging.system': tracerName,
      'messaging.operation.type': 'process',
      'messaging.operation.name': 'process',
      'messaging.destination.name': message.queue,
      'messaging.message.id': message.id,
      'messaging.taskqueue.retries': message.retries
    },
    links: creation === undefined ? undefined : [{ context: creation }]
  }, parent)
  if (!isSpanContextValid(span.spanContext())) return undefined
  const active = trace.setSpan(parent, span)
  const headers: Record<string, string> = {}
  propagation.inject(active, headers)
  return { span, context: active, headers }
}

/** Runs `work` with the try's span active, so that what the dispatch starts nests inside it. */
export function withTrySpan<T> (traced: TrySpan | undefined, work: () => T): T {
  return traced === undefined ? work() : context.with(traced.context, work)
}

/** Ends the span of a try: an error status for a try that failed (status 400 or more, timeout, error). */
export function endTrySpan (traced: TrySpan | undefined, result: TryResult): void {
  if (traced === undefined) return
  const { span } = traced
  if (result.kind === 'answered') {
    span.setAttribute('http.response.status_code', result.statusCode)
    if (result.statusCode >= 400) span.setStatus({ code: SpanStatusCode.ERROR, message: `answered ${result.statusCode}` })
  } else if (result.kind === 'timeout') {
    span.setStatus({ code: SpanStatusCode.ERROR, message: 'ran past taskTimeout' })
  } else {
    const error = result.error instanceof Error ? result.error : new Error(String(result.error))
    span.recordException(error)
    span.setStatus({ code: SpanStatusCode.ERROR, message: error.message })
  }
  span.end()
}
