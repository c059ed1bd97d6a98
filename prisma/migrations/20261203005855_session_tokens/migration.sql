-- Short-lived, scoped bearer tokens for browsers (createSessionToken): an account or one seat, read
-- and subscribe, optionally buy. Only the SHA-256 of the secret is stored.
CREATE TABLE "session_tokens" (
    "id" TEXT NOT NULL,
    "account_id" TEXT NOT NULL,
    "seat_id" TEXT,
    "can_buy" BOOLEAN NOT NULL DEFAULT false,
    "prefix" TEXT NOT NULL,
    "secret_hash" TEXT NOT NULL,
    "created_by_key_id" TEXT NOT NULL,
    "created_at" TIMESTAMP(3) NOT NULL,
    "expires_at" TIMESTAMP(3) NOT NULL,
    "revoked_at" TIMESTAMP(3),

    CONSTRAINT "session_tokens_pkey" PRIMARY KEY ("id")
);

CREATE UNIQUE INDEX "session_tokens_prefix_key" ON "session_tokens"("prefix");
CREATE INDEX "session_tokens_account_id_expires_at_idx" ON "session_tokens"("account_id", "expires_at");
ALTER TABLE "session_tokens" ADD CONSTRAINT "session_tokens_account_id_fkey" FOREIGN KEY ("account_id") REFERENCES "accounts"("id") ON DELETE RESTRICT ON UPDATE CASCADE;
