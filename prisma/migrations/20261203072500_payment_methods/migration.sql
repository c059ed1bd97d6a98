-- Cards on file (issue 18): the account's default card as Stripe reported it, Checkout purchases that
-- save the card, the card an off-session purchase was first charged on, and the state and alert of a
-- payment waiting for the customer to authenticate it (SCA).
-- AlterEnum
ALTER TYPE "AlertKind" ADD VALUE 'PAYMENT_ACTION_REQUIRED';

-- AlterEnum
ALTER TYPE "TopUpStatus" ADD VALUE 'REQUIRES_ACTION';

-- AlterTable
ALTER TABLE "top_up_purchases" ADD COLUMN     "payment_method_id" TEXT,
ADD COLUMN     "save_payment_method" BOOLEAN NOT NULL DEFAULT false;

-- CreateTable
CREATE TABLE "payment_methods" (
    "account_id" TEXT NOT NULL,
    "stripe_payment_method_id" TEXT NOT NULL,
    "brand" TEXT NOT NULL,
    "last4" TEXT NOT NULL,
    "exp_month" INTEGER NOT NULL,
    "exp_year" INTEGER NOT NULL,
    "updated_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "payment_methods_pkey" PRIMARY KEY ("account_id")
);

-- AddForeignKey
ALTER TABLE "payment_methods" ADD CONSTRAINT "payment_methods_account_id_fkey" FOREIGN KEY ("account_id") REFERENCES "accounts"("id") ON DELETE RESTRICT ON UPDATE CASCADE;
