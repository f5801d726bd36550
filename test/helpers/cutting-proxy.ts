// A TCP proxy on 127.0.0.1 in front of a Redis server, which drops a connection at the moment a
// chosen reply comes back, instead of forwarding that reply: the server has run the command, the
// client never hears of it. That is what a link broken at the wrong moment does (and ioredis then
// sends the command again once it has reconnected).
import { connect, createServer, type Socket } from 'node:net'
import type { RedisConnection } from './redis'

export interface CuttingProxy {
  /** The port clients connect to, on 127.0.0.1. */
  port: number
  /** Connections dropped so far. */
  readonly cuts: number
  close: () => Promise<void>
}

/** Which reply to drop: the first chunk of it that matches `reply`, or the one after a request that matches `request`. */
export interface CutAt {
  reply?: (chunk: Buffer) => boolean
  request?: (chunk: Buffer) => boolean
}

/**
 * Starts the proxy in front of `redis`. The first reply chosen by `cutAt` is not forwarded: client
 * and server side of its connection are closed instead. Every other byte goes through unchanged.
 */
export async function cuttingProxy (redis: RedisConnection, cutAt: CutAt): Promise<CuttingProxy> {
  const { connection } = redis
  const connectUpstream = (): Socket => {
    if ('unixSocketPath' in connection) return connect(connection.unixSocketPath)
    const url = new URL(connection.url)
    return connect(Number(url.port || 6379), url.hostname)
  }
  let cuts = 0
  const open = new Set<Socket>()
  const server = createServer((client) => {
    const upstream = connectUpstream()
    let doomed = false
    for (const socket of [client, upstream]) {
      open.add(socket)
      socket.on('close', () => open.delete(socket))
      socket.on('error', () => {})
    }
    client.on('data', (chunk) => {
      if (cuts === 0 && cutAt.request?.(chunk) === true) doomed = true
      upstream.write(chunk)
    })
    upstream.on('data', (chunk) => {
      if (cuts === 0 && (doomed || cutAt.reply?.(chunk) === true)) {
        cuts++
        client.destroy()
        upstream.destroy()
        return
      }
      client.write(chunk)
    })
    client.on('close', () => upstream.destroy())
    upstream.on('close', () => client.destroy())
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('the proxy has no port')
  return {
    port: address.port,
    get cuts () { return cuts },
    close: () => new Promise<void>((resolve) => {
      for (const socket of open) socket.destroy()
      server.close(() => resolve())
    })
  }
}
