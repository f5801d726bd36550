// `taskqueueDashboard`: a page and a JSON API to see and steer the queues of `app.taskqueue`,
// registered where the app wants it, behind the app's own authentication:
//   app.register(async (admin) => { admin.addHook('onRequest', auth); await admin.register(taskqueueDashboard) }, { prefix: '/admin/taskqueue' })
import fp from 'fastify-plugin'
import type { FastifyInstance, FastifySchemaValidationError } from 'fastify'
import { InvalidRequestError, NotRegisteredError } from '../errors'
import { dashboardApi } from './api'
import { dashboardPage } from './page'

/** A schema error as a coded 400: which part of the request, and what was wrong with it. */
function invalidRequest (errors: FastifySchemaValidationError[], dataVar: string): Error {
  const [first] = errors
  // The task id of a route is its wildcard parameter (see ./api.ts): named `id` for the client.
  const path = first.instancePath.replace(/^\/\*$/, '/id').replace(/\//g, '.')
  return new InvalidRequestError(`${dataVar}${path} ${String(first.message)}`)
}

async function taskqueueDashboard (app: FastifyInstance): Promise<void> {
  // Checked here rather than through fastify-plugin's `dependencies`, which only sees plugins
  // registered in the same context chain by name, and answers with Fastify's own code.
  if (!app.hasDecorator('taskqueue')) throw new NotRegisteredError()
  app.setSchemaErrorFormatter(invalidRequest)
  // The actions take no body: `curl -X POST -H 'content-type: application/json'` without one is
  // fine here. Any body sent is still read by Fastify's own JSON parser (size limit, poisoning).
  const json = app.getDefaultJsonParser('error', 'error')
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    if (body === '') done(null, {})
    else json(request, body as string, done)
  })
  await dashboardPage(app)
  dashboardApi(app)
}

// `encapsulate: true`: the plugin keeps its own context, so its schema error formatter and its
// routes' hooks stay inside it and the prefix it is registered with applies; fp() only names it.
fp(taskqueueDashboard, {
  fastify: '5.x',
  name: 'fastify-taskqueue-dashboard',
  encapsulate: true
})

export { taskqueueDashboard }
