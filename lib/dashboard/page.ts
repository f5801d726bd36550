// The dashboard's page: four files shipped in the package (./static, copied to dist/ by the
// build), read once when the plugin registers and served from memory. Served here rather than by
// @fastify/static, whose decorators would clash with an app that registers it too.
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { FastifyInstance, FastifyReply, FastifySchema } from 'fastify'

/**
 * Nothing but the page's own script and style: no inline code, no other site, no frame around it.
 * Data reaches the page as JSON and is written as text, so an injected tag has nowhere to run.
 */
const contentSecurityPolicy = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self'",
  "img-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'"
].join('; ')

function escapeAttribute (text: string): string {
  return text.replace(/[&<>"']/g, (character) => `&#${character.charCodeAt(0)};`)
}

function send (reply: FastifyReply, type: string, body: string, headers: Record<string, string> = {}): FastifyReply {
  return reply
    .headers({ 'content-type': type, 'cache-control': 'no-cache', 'x-content-type-options': 'nosniff', ...headers })
    .send(body)
}

export async function dashboardPage (app: FastifyInstance): Promise<void> {
  const folder = join(__dirname, 'static')
  const [html, css, script, icon] = await Promise.all(['index.html', 'dashboard.css', 'dashboard.js', 'favicon.svg'].map((file) => readFile(join(folder, file), 'utf8')))
  // The page's links are absolute: at `<prefix>` without a trailing slash, relative ones would
  // leave the prefix's last segment out.
  const page = html.replaceAll('{{base}}', escapeAttribute(app.prefix))
  // `hide` is read by document generators (@fastify/swagger), which Fastify's own type does not know.
  const hidden = { schema: { hide: true } as FastifySchema }

  app.get('/', hidden, async (request, reply) => {
    return send(reply, 'text/html; charset=utf-8', page, {
      'content-security-policy': contentSecurityPolicy,
      'referrer-policy': 'no-referrer',
      'x-frame-options': 'DENY'
    })
  })
  app.get('/dashboard.css', hidden, async (request, reply) => send(reply, 'text/css; charset=utf-8', css))
  app.get('/dashboard.js', hidden, async (request, reply) => send(reply, 'text/javascript; charset=utf-8', script))
  // Else the browser asks for /favicon.ico at the root of the site, and logs its 404.
  app.get('/favicon.svg', hidden, async (request, reply) => send(reply, 'image/svg+xml', icon))
}
