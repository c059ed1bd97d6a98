-- Whether ACCOUNT keys may move their account to a plan themselves. Off for every existing plan: a
-- plan change grants credits, so only the operator turns it on, plan by plan.
ALTER TABLE "plans" ADD COLUMN "self_serve" BOOLEAN NOT NULL DEFAULT false;
