// The benchmark's Redis: REDIS_URL when it is set, else a throwaway redis-server on a unix socket
// in a temporary folder (no persistence), stopped at the end of the run.
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'

async function ping (connection) {
  const client = connection.url === undefined
    ? new Redis({ path: connection.unixSocketPath, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
    : new Redis(connection.url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
  client.on('error', () => {})
  try {
    await client.connect()
    await client.ping()
    const info = await client.info('server')
    return /redis_version:(\S+)/.exec(info)?.[1] ?? 'unknown'
  } finally {
    client.disconnect()
  }
}

/**
 * Resolves to `{ connection, version, own, stop }`, or to `{ skipped }` with the reason when no
 * Redis can be had. `connection` is `{ url }` or `{ unixSocketPath }`, as queue options take it.
 */
export async function startRedis () {
  const url = process.env.REDIS_URL
  if (url !== undefined && url !== '') {
    const connection = { url }
    return { connection, version: await ping(connection), own: false, stop: async () => {} }
  }
  const dir = mkdtempSync(join(tmpdir(), 'taskqueue-bench-redis-'))
  const socketPath = join(dir, 'redis.sock')
  const server = spawn('redis-server', [
    '--port', '0', '--unixsocket', socketPath, '--unixsocketperm', '700', '--dir', dir, '--save', '', '--appendonly', 'no'
  ], { stdio: 'ignore' })
  const failed = new Promise((resolve) => {
    server.once('error', (error) => resolve(error.code === 'ENOENT' ? 'redis-server is not on the PATH' : error.message))
    server.once('exit', (code) => resolve(`redis-server exited with code ${code}`))
  })
  const cleanup = () => {
    if (server.exitCode === null && server.signalCode === null) server.kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  }
  process.once('exit', cleanup)
  const connection = { unixSocketPath: socketPath }
  for (let attempt = 0; attempt < 200; attempt++) {
    const reason = await Promise.race([failed, new Promise((resolve) => setTimeout(resolve, 25, undefined))])
    if (reason !== undefined) {
      cleanup()
      return { skipped: reason }
    }
    try {
      const version = await ping(connection)
      return {
        connection,
        version,
        own: true,
        stop: async () => {
          if (server.exitCode === null && server.signalCode === null) {
            const exited = new Promise((resolve) => server.once('exit', resolve))
            server.kill('SIGTERM')
            await exited
          }
          cleanup()
        }
      }
    } catch {}
  }
  cleanup()
  return { skipped: `redis-server did not answer on ${socketPath}` }
}
