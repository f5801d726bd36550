// The dashboard as a plugin (issue 13, "The dashboard"): it sits behind the app's authentication,
// its actions refuse what a cross-site page could send, its page is served with a strict policy
// under its prefix, and nothing of it leaks into the rest of the app.
import { test } from 'tap'
import Fastify from 'fastify'
import swagger from '@fastify/swagger'
import taskqueue, { taskqueueDashboard } from '../plugin'
import { recordingApp } from './helpers/app'
import { act, actions, adminHeaders, dashboardApp, prefix, read, reads } from './helpers/dashboard'

const options = { queues: [{ queue: 'default' }], consumers: [] }

test('issue 13: every action refuses a request that is not application/json with 415 FST_TASKQUEUE_UNSUPPORTED_MEDIA_TYPE', async (t) => {
  const { app } = await dashboardApp(t, options)
  const refused: Array<[string | undefined, string]> = [
    [undefined, 'a request without a content type'],
    ['text/plain', '"text/plain"'],
    ['application/x-www-form-urlencoded', '"application/x-www-form-urlencoded"'],
    ['multipart/form-data; boundary=x', '"multipart/form-data; boundary=x"'],
    ['application/jsonp', '"application/jsonp"']
  ]
  for (const [method, path] of actions('default')) {
    for (const [contentType, said] of refused) {
      const headers: Record<string, string> = { ...adminHeaders }
      if (contentType !== undefined) headers['content-type'] = contentType
      const response = await app.inject({ method, url: `${prefix}${path}`, headers, payload: contentType === undefined ? undefined : 'a=1' })
      t.equal(response.statusCode, 415, `${method} ${path} as ${contentType ?? 'nothing'}`)
      t.same(response.json(), {
        statusCode: 415,
        code: 'FST_TASKQUEUE_UNSUPPORTED_MEDIA_TYPE',
        error: 'Unsupported Media Type',
        message: `A dashboard action must be sent as application/json, not ${said}`
      })
    }
  }
  t.equal(await app.taskqueue.queue('default').isPaused(), false, 'no refused Pause paused the queue')
  for (const contentType of ['application/json; charset=utf-8', 'Application/JSON']) {
    const response = await act(app, 'POST', '/api/queues/default/pause', { headers: { 'content-type': contentType } })
    t.equal(response.statusCode, 200, `${contentType} is JSON`)
  }
  t.equal(await app.taskqueue.queue('default').isPaused(), true)
})

test('issue 13: every action refuses Sec-Fetch-Site: cross-site with 403 FST_TASKQUEUE_CROSS_SITE, and takes the others', async (t) => {
  const { app } = await dashboardApp(t, options)
  for (const [method, path] of actions('default')) {
    const response = await act(app, method, path, { headers: { 'sec-fetch-site': 'cross-site' } })
    t.equal(response.statusCode, 403, `${method} ${path}`)
    t.same(response.json(), {
      statusCode: 403,
      code: 'FST_TASKQUEUE_CROSS_SITE',
      error: 'Forbidden',
      message: 'A dashboard action was refused: the browser says it comes from another site (Sec-Fetch-Site: cross-site)'
    })
  }
  t.equal(await app.taskqueue.queue('default').isPaused(), false, 'the cross-site Pause did nothing')
  // A browser says `none` for what the user typed, `same-site` for a sibling subdomain; a client
  // that is no browser sends nothing.
  for (const site of ['same-origin', 'same-site', 'none', undefined]) {
    const headers: Record<string, string> = { ...adminHeaders, 'content-type': 'application/json' }
    if (site !== undefined) headers['sec-fetch-site'] = site
    const response = await app.inject({ method: 'POST', url: `${prefix}/api/queues/default/resume`, headers, payload: '{}' })
    t.equal(response.statusCode, 200, `Sec-Fetch-Site: ${site ?? '(none sent)'}`)
  }
})

test("issue 13: the app's authentication hook answers first: a 401 stops the page, its files and every route", async (t) => {
  const { app } = await dashboardApp(t, options)
  const paths = ['', '/', '/dashboard.css', '/dashboard.js', '/favicon.svg', '/api/queues', ...reads('default'), ...reads('nope')]
  for (const path of paths) {
    const response = await app.inject({ method: 'GET', url: `${prefix}${path}` })
    t.equal(response.statusCode, 401, `GET ${prefix}${path}`)
    t.equal(response.json().code, 'APP_UNAUTHORIZED')
  }
  for (const [method, path] of actions('default')) {
    // Neither JSON nor same-site: the app's hook still answers before the dashboard's guard.
    const response = await app.inject({ method, url: `${prefix}${path}`, headers: { 'content-type': 'text/plain', 'sec-fetch-site': 'cross-site' }, payload: 'x' })
    t.equal(response.statusCode, 401, `${method} ${path}`)
    t.equal(response.json().code, 'APP_UNAUTHORIZED')
  }
  t.equal(await app.taskqueue.queue('default').isPaused(), false, 'no action was taken')
})

test('issue 13: the page is served at the prefix with a strict Content-Security-Policy, its files beside it', async (t) => {
  const { app } = await dashboardApp(t, options)
  for (const path of ['', '/']) {
    const page = await read(app, path)
    t.equal(page.statusCode, 200, `GET ${prefix}${path}`)
    t.equal(page.headers['content-type'], 'text/html; charset=utf-8')
    t.equal(page.headers['content-security-policy'], "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    t.equal(page.headers['x-frame-options'], 'DENY')
    t.equal(page.headers['x-content-type-options'], 'nosniff')
    t.equal(page.headers['referrer-policy'], 'no-referrer')
    t.match(page.body, `<link rel="stylesheet" href="${prefix}/dashboard.css">`, 'the links are absolute, under the prefix')
    t.match(page.body, `<script src="${prefix}/dashboard.js" defer></script>`)
    t.match(page.body, `<link rel="icon" href="${prefix}/favicon.svg" type="image/svg+xml">`)
    t.match(page.body, `<body data-api="${prefix}/api">`)
    t.notMatch(page.body, /<script>|style=|https?:\/\//, 'no inline script or style, nothing from another site')
  }
  const css = await read(app, '/dashboard.css')
  t.equal(css.headers['content-type'], 'text/css; charset=utf-8')
  t.match(css.body, /\.queue \{/)
  const script = await read(app, '/dashboard.js')
  t.equal(script.headers['content-type'], 'text/javascript; charset=utf-8')
  t.equal(script.headers['x-content-type-options'], 'nosniff')
  t.notMatch(script.body, /innerHTML|outerHTML|insertAdjacentHTML|document\.write/, 'the script writes no HTML')
  const icon = await read(app, '/favicon.svg')
  t.equal(icon.headers['content-type'], 'image/svg+xml')
  t.match(icon.body, /^<svg /)
})

test('issue 13: registered without a prefix, the dashboard serves its page at / and its files from /', async (t) => {
  const { app } = await recordingApp(t, options, { noTaskRoute: true, routes: (app) => app.register(taskqueueDashboard) })
  const page = await app.inject('/')
  t.equal(page.statusCode, 200)
  t.match(page.body, '<link rel="stylesheet" href="/dashboard.css">')
  t.match(page.body, '<body data-api="/api">')
  t.equal((await app.inject('/api/queues')).json()[0].queue, 'default')
})

test('issue 13: registering the dashboard without fastify-taskqueue fails with FST_TASKQUEUE_NOT_REGISTERED', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  // Awaiting register() loads the plugin: its error rejects that await.
  await t.rejects(async () => { await app.register(taskqueueDashboard, { prefix: '/admin' }) }, {
    code: 'FST_TASKQUEUE_NOT_REGISTERED',
    message: 'taskqueueDashboard needs fastify-taskqueue: register it before the dashboard, in the same app or a parent of its context'
  })
})

test('issue 13: a dashboard in a child context sees the taskqueue plugin registered on the root', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(taskqueue, options)
  await app.register(async (child) => {
    await child.register(async (grandChild) => { await grandChild.register(taskqueueDashboard) }, { prefix: '/deep' })
  }, { prefix: '/admin' })
  await app.ready()
  t.equal((await app.inject('/admin/deep/api/queues')).statusCode, 200)
})

test("issue 13: the dashboard's guard, JSON parser and error format stay in its own context", async (t) => {
  const { app } = await dashboardApp(t, options, {
    // A route of the app in the admin scope, beside the dashboard: not the dashboard's to guard.
    admin: (admin) => { admin.post('/notes', async (request) => ({ got: request.body })) },
    routes: (app) => {
      app.post('/signup', { schema: { body: { type: 'object', required: ['user'] } } }, async () => ({ ok: true }))
      app.addContentTypeParser('text/plain', { parseAs: 'string' }, (request, body, done) => { done(null, body) })
    }
  })
  const notes = await app.inject({ method: 'POST', url: `${prefix}/notes`, headers: { ...adminHeaders, 'content-type': 'text/plain', 'sec-fetch-site': 'cross-site' }, payload: 'hello' })
  t.equal(notes.statusCode, 200, "the admin scope's own route takes a cross-site text/plain request")
  t.same(notes.json(), { got: 'hello' })
  const invalid = await app.inject({ method: 'POST', url: '/signup', payload: {} })
  t.equal(invalid.json().code, 'FST_ERR_VALIDATION', "the app's validation errors keep Fastify's code")
  const empty = await app.inject({ method: 'POST', url: '/signup', headers: { 'content-type': 'application/json' }, payload: '' })
  t.equal(empty.json().code, 'FST_ERR_CTP_EMPTY_JSON_BODY', "and its JSON parser refuses an empty body, as Fastify's does")
})

// @fastify/swagger lists the routes added after it: registered first, it sees every dashboard route.
test("issue 13: beside @fastify/swagger, registered first, the dashboard's routes are left out of the document", async (t) => {
  const openapi = { openapi: { info: { title: 'test', version: '1.0.0' } } }
  const { app } = await dashboardApp(t, options, {
    noTaskRoute: true,
    before: (app) => app.register(swagger, openapi),
    routes: (app) => { app.get('/public', async () => ({ ok: true })) }
  })
  const { paths = {} } = app.swagger() as { paths?: Record<string, unknown> }
  t.same(Object.keys(paths), ['/public'], "only the app's own route is listed")
  t.equal((await read(app, '/api/queues')).statusCode, 200, 'and the dashboard works')
})
