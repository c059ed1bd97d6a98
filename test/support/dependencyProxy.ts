import { createServer, Socket, type Server } from 'node:net';
import { freePort } from './processServer.ts';

/**
 * A TCP proxy in front of PostgreSQL or Redis, so that a dependency can fail for one test alone
 * (the real services are shared by everything on the machine and never stopped): `cut` kills every
 * connection and refuses new ones until `restore`, as a restart or a network partition would;
 * `hold` keeps connections open but lets nothing through until `release`, as a dependency that
 * stalls would.
 */
export class DependencyProxy {
  private readonly connections = new Set<{ client: Socket; upstream: Socket; flush(): void }>();
  private refusing = false;
  private holding = false;
  private server: Server | null = null;
  port = 0;

  private constructor(private readonly target: { host: string; port: number }) {}

  static async start(target: URL, defaultPort: number): Promise<DependencyProxy> {
    const proxy = new DependencyProxy({ host: target.hostname, port: Number(target.port || defaultPort) });
    proxy.port = await freePort();
    await proxy.listen();
    return proxy;
  }

  /** The target URL with its host and port replaced by the proxy's. */
  through(url: string): string {
    const proxied = new URL(url);
    proxied.hostname = '127.0.0.1';
    proxied.port = String(this.port);
    return proxied.toString();
  }

  private listen(): Promise<void> {
    this.server = createServer((client) => {
      if (this.refusing) return void client.destroy();
      const upstream = new Socket();
      const pending: Array<[Socket, Buffer]> = [];
      const forward = (to: Socket) => (chunk: Buffer) => {
        if (this.holding) pending.push([to, chunk]);
        else to.write(chunk);
      };
      const connection = {
        client,
        upstream,
        flush: () => {
          for (const [to, chunk] of pending.splice(0)) if (!to.destroyed) to.write(chunk);
        },
      };
      this.connections.add(connection);
      const close = () => {
        client.destroy();
        upstream.destroy();
        this.connections.delete(connection);
      };
      client.on('data', forward(upstream));
      upstream.on('data', forward(client));
      for (const socket of [client, upstream]) {
        socket.on('error', close);
        socket.on('close', close);
      }
      upstream.connect(this.target.port, this.target.host);
    });
    return new Promise((resolve) => this.server!.listen(this.port, '127.0.0.1', resolve));
  }

  /** Every open connection dies and new ones are refused until restore(). */
  cut(): void {
    this.refusing = true;
    for (const { client, upstream } of this.connections) {
      client.destroy();
      upstream.destroy();
    }
  }

  restore(): void {
    this.refusing = false;
  }

  /** Connections stay open, but what is sent either way waits until release(). */
  hold(): void {
    this.holding = true;
  }

  release(): void {
    this.holding = false;
    for (const connection of this.connections) connection.flush();
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
