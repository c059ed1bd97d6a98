import { Repeater } from 'graphql-yoga';

/**
 * A live feed that starts with the current state: `snapshot()` is read only after the live source
 * listens, so a change committed in between is delivered (perhaps twice: a newer read of the same
 * state), never lost. A client that resubscribes after a lost connection thus learns whatever
 * changed while it was away, without asking.
 *
 * A Repeater rather than an async generator: a generator waiting for the next event cannot be
 * ended until one arrives, and an unsubscribed client would keep its listener until then.
 */
export function snapshotThenLive<T>(live: AsyncIterable<T>, snapshot: () => Promise<readonly T[]>): AsyncIterableIterator<T> {
  return new Repeater<T>(async (push, stop) => {
    const iterator = live[Symbol.asyncIterator]();
    let stopped = false;
    void stop.then(() => {
      stopped = true;
      void iterator.return?.();
    });
    // The first pull starts the source listening (a pubsub's Repeater attaches its listener then).
    let pending = iterator.next();
    try {
      for (const item of await snapshot()) {
        if (stopped) return;
        await push(item);
      }
      for (;;) {
        const result = await pending;
        if (result.done || stopped) break;
        await push(result.value);
        pending = iterator.next();
      }
      stop();
    } catch (error) {
      stop(error);
    }
  });
}
