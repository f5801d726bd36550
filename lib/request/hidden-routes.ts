// taskOnly routes answer 404 to every outside caller: a generated document of the API, such as
// the OpenAPI document of @fastify/swagger, should not list them as if a client could call them.
import type { RouteOptions } from 'fastify'

/**
 * An onRoute hook: marks a `taskOnly` route `schema.hide`, which document generators honour,
 * unless the route decided `hide` itself (`hide: false` keeps it listed).
 */
export function hideTaskOnlyRoute (route: RouteOptions): void {
  if ((route.config as { taskOnly?: unknown } | undefined)?.taskOnly !== true) return
  const schema = route.schema as Record<string, unknown> | undefined
  if (schema?.hide !== undefined) return
  // A new object rather than a change to the route's own: one schema object may serve several
  // routes, not all of them taskOnly.
  route.schema = { ...schema, hide: true } as RouteOptions['schema']
}
