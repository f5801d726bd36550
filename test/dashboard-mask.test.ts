// What the dashboard masks (issue 13, "Nothing secret leaves through it"): the rules of
// lib/dashboard/mask.ts on their own, for the names and urls that the API tests do not reach.
import { test } from 'tap'
import { MASKED, deadLetterView, isCredential, maskHeaders, maskUrl } from '../lib/dashboard/mask'

test('issue 13: credential header names are recognised by the words they hold', async (t) => {
  const credentials = ['cookie', 'set-cookie', 'authorization', 'proxy-authorization', 'x-api-key', 'x-auth-token', 'X-CSRF-Token',
    'x-xsrf-token', 'x-amz-security-token', 'x-hub-signature-256', 'x-session-id', 'x-client-secret', 'x-password', 'x-db-pwd', 'x-credentials', 'apikey']
  for (const name of credentials) t.ok(isCredential(name), `${name} is masked`)
  for (const name of ['accept', 'content-type', 'x-lang', 'x-request-id', 'user-agent', 'x-forwarded-for']) t.notOk(isCredential(name), `${name} is shown`)
  t.same(maskHeaders({ Cookie: 'a', accept: 'b' }), { Cookie: MASKED, accept: 'b' })
})

test('issue 13: maskUrl masks the values of credential query parameters, and only those', async (t) => {
  const cases: Array<[string, string]> = [
    ['/tasks/a', '/tasks/a'],
    ['/tasks/a?page=2', '/tasks/a?page=2'],
    ['/tasks/a?token=abc&page=2&token=def', `/tasks/a?token=${MASKED}&page=2&token=${MASKED}`],
    ['/tasks/a?x%2Dapi%2Dkey=abc', `/tasks/a?x%2Dapi%2Dkey=${MASKED}`],
    ['/tasks/a?api+key=abc', `/tasks/a?api+key=${MASKED}`],
    ['/tasks/a?%zz-token=abc', `/tasks/a?%zz-token=${MASKED}`],
    ['/tasks/a?%zz=abc', '/tasks/a?%zz=abc'],
    ['/tasks/a?token&page=1', '/tasks/a?token&page=1'],
    ['/tasks/a?password=', `/tasks/a?password=${MASKED}`],
    ['/tasks/a?', '/tasks/a?']
  ]
  for (const [url, masked] of cases) t.equal(maskUrl(url), masked, url)
})

test('issue 13: an unreadable dead letter is shown without its text, only its size', async (t) => {
  const view = deadLetterView({ id: null, queue: 'q', reason: 'unreadable', detail: 'not JSON', at: 0, task: null, raw: '{"headers":{"cookie":"sid=é"' })
  t.same(view, { id: null, queue: 'q', reason: 'unreadable', detail: 'not JSON', at: 0, task: null, rawBytes: 29 })
})
