import { spawn, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { freePort } from './processServer.ts';

/** A redis-server of the test's own on a free port, that the test can stop and start again. */
export interface RedisProcess {
  url: string;
  start(): Promise<void>;
  /** SIGKILL: gone at once, nothing saved (it keeps nothing anyway). */
  stop(): Promise<void>;
}

export async function startRedisProcess(binary: string): Promise<RedisProcess> {
  const port = await freePort();
  let child: ChildProcess | null = null;
  const accepts = () =>
    new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
  const redis: RedisProcess = {
    url: `redis://127.0.0.1:${port}`,
    async start() {
      child = spawn(binary, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
      const deadline = Date.now() + 10_000;
      while (!(await accepts())) {
        if (Date.now() > deadline) throw new Error('redis-server did not start');
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    },
    async stop() {
      const running = child;
      if (!running || running.exitCode !== null) return;
      await new Promise<void>((resolve) => {
        running.once('exit', () => resolve());
        running.kill('SIGKILL');
      });
    },
  };
  await redis.start();
  return redis;
}
