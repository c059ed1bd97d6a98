interface Waiting<Input, Output> {
  input: Input;
  settle: (output: Output) => void;
  fail: (error: unknown) => void;
}

/**
 * Many callers' statements as few: while `concurrency` batches are in flight, the inputs that arrive
 * wait and then go together as the next batch (at most `maxBatch`), one statement and one round trip
 * for all of them. Under light load nothing waits (a batch of one, the latency of a lone call); under
 * heavy load the batches grow by themselves, which turns the database's per-statement costs (round
 * trip, wake-up, commit) into per-batch ones.
 *
 * `run` answers each input of a batch in its order; when it throws, every caller of that batch gets
 * the error.
 */
export class Coalescer<Input, Output> {
  private readonly waiting: Array<Waiting<Input, Output>> = [];
  private inFlight = 0;

  constructor(
    private readonly options: {
      concurrency: number;
      maxBatch: number;
      run: (inputs: Input[]) => Promise<Output[]>;
    },
  ) {}

  submit(input: Input): Promise<Output> {
    return new Promise((settle, fail) => {
      this.waiting.push({ input, settle, fail });
      if (this.inFlight < this.options.concurrency) this.dispatch();
    });
  }

  private dispatch(): void {
    const batch = this.waiting.splice(0, this.options.maxBatch);
    if (batch.length === 0) return;
    this.inFlight += 1;
    void this.options
      .run(batch.map((waiting) => waiting.input))
      .then(
        (outputs) => batch.forEach((waiting, i) => waiting.settle(outputs[i]!)),
        (error: unknown) => batch.forEach((waiting) => waiting.fail(error)),
      )
      .finally(() => {
        this.inFlight -= 1;
        if (this.waiting.length > 0) this.dispatch();
      });
  }
}
