// Every coded error the plugin can raise has its row in the README's errors table, under the name
// the package exports it by: a user who meets a code looks it up there. Read from the error
// classes themselves, so a new error without a row fails here.
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { test } from 'tap'
import * as errors from '../lib/errors'

test('the README lists every error code with its class', async (t) => {
  const readme = readFileSync(path.join(__dirname, '..', 'README.md'), 'utf8')
  const rows = new Map<string, string>()
  for (const [, code, name] of readme.matchAll(/^\| `(FST_TASKQUEUE_[A-Z_]+)` \| `(\w+)` \|/gm)) rows.set(code, name)
  const raised = Object.entries(errors)
    .filter(([name, value]) => typeof value === 'function' && name.endsWith('Error'))
    .map(([name, value]) => [(new (value as new () => { code: string })()).code, name] as const)
  t.ok(raised.length >= 17, 'the error classes are found')
  for (const [code, name] of raised) t.equal(rows.get(code), name, `${code} has its row, naming ${name}`)
  t.equal(rows.size, raised.length, 'and no row names a code the plugin no longer has')
})
