// The guard of the dashboard's actions. A page of another site can make the browser send a form or
// a "simple" fetch to the dashboard, with the admin's cookies; it can neither send `application/json`
// without a CORS preflight (which the dashboard never grants) nor hide where it comes from from a
// browser that sends Sec-Fetch-Site. So an action is refused unless it is JSON and not cross-site.
import type { FastifyRequest } from 'fastify'
import { CrossSiteError, UnsupportedMediaTypeError } from '../errors'

/** An onRequest hook of the mutating routes: it runs after the app's own hooks (its authentication). */
export async function refuseForeignRequests (request: FastifyRequest): Promise<void> {
  // Older browsers send no Sec-Fetch-Site: the content type alone then keeps forms out.
  if (request.headers['sec-fetch-site'] === 'cross-site') throw new CrossSiteError()
  const contentType = request.headers['content-type']
  const mediaType = contentType?.split(';')[0].trim().toLowerCase()
  if (mediaType !== 'application/json') throw new UnsupportedMediaTypeError(contentType === undefined ? 'a request without a content type' : JSON.stringify(contentType))
}
