/// <reference lib="dom" />
/**
 * The reference station PWA in real headless Chromium (Debian's, through
 * playwright-core): sign in and redeem; a typo refused offline; 20 redeems
 * offline survive a reload and drain into exactly 20 redemptions; the gateway
 * killed mid-flush and restarted loses and duplicates nothing; two tabs never
 * flush at once; a conflict is shown to staff. Screenshots of each key state
 * go to `.local/artifacts/station/`.
 */
import assert from "node:assert/strict";
import type postgres from "postgres";
import { createWorld, issueCodes, ownerDb, type World } from "../_support.ts";
import {
  load,
  openStation,
  queued,
  redeem,
  redeemAndWait,
  shot,
  signIn,
  type StationHarness,
  waitQueued,
} from "./_browser.ts";

const DEMO_CAMPAIGN = "00000000-0000-4000-8000-00000000d001";
const PASSWORD = "station-test-password";

/** The world's operator gets a password (the auth stand-in checks auth.users.encrypted_password). */
async function operatorLogin(sql: postgres.Sql, world: World): Promise<string> {
  const [{ email }] = await sql`
    update auth.users set encrypted_password = extensions.crypt(${PASSWORD}, extensions.gen_salt('bf', 4))
    where id = ${world.operator.id} returning email`;
  return email as string;
}

/** How many redemptions the database holds for these display codes. */
async function redemptions(sql: postgres.Sql, codes: string[]): Promise<number> {
  const [{ n }] = await sql`
    select count(*)::int as n from app.redemptions r join app.vouchers v on v.id = r.voucher_id
    where v.code = any(${codes.map((c) => c.replaceAll("-", ""))}::text[])`;
  return n;
}

/** Runs `fn` with a fresh browser, gateway and station server, and a connection as `postgres`. */
async function withStation(
  fn: (h: StationHarness, sql: postgres.Sql) => Promise<void>,
): Promise<void> {
  const sql = ownerDb();
  const h = await openStation();
  try {
    await fn(h, sql);
  } finally {
    await h.close();
    await sql.end();
  }
}

const opts = { sanitizeOps: false, sanitizeResources: false };

Deno.test({
  name: "station PWA: the demo operator signs in, looks a voucher up and redeems it",
  ...opts,
  fn: () =>
    withStation(async ({ page, station }, sql) => {
      const [{ batch }] = await sql`
        select (app.issue_batch(${DEMO_CAMPAIGN}::uuid, 1) ->> 'batch_id')::uuid as batch`;
      const [{ code }] = await sql`
        select app.format_code(code) as code from app.vouchers where batch_id = ${batch}`;

      await load(page, station.url);
      assert.equal(await page.getByRole("heading", { name: "Sign in" }).isVisible(), true);
      await shot(page, "01-sign-in");
      await page.getByLabel("Email").fill("operator@demo.local");
      await page.getByLabel("Password").fill("wrong");
      await page.getByRole("button", { name: "Sign in" }).click();
      await page.getByText("Wrong email or password.").waitFor();
      await signIn(page, station.url, "operator@demo.local", "operator-demo-password");

      // Typed the way people type it: lower case, spaces instead of dashes. Enter looks it up.
      await page.getByLabel("Voucher code").fill(code.toLowerCase().replaceAll("-", " "));
      await page.getByLabel("Voucher code").press("Enter");
      await page.locator("#preview").waitFor();
      assert.match(await page.locator("#result").innerText(), /can be redeemed/);
      await shot(page, "02-preview");

      await page.getByRole("button", { name: "Redeem" }).click();
      await page.locator('#result[data-kind="success"]').waitFor();
      assert.match(await page.locator("#result").innerText(), new RegExp(`Redeemed ${code}`));
      assert.equal(
        await page.evaluate(() => document.activeElement?.id),
        "code",
        "focus returns to the code field for the next voucher",
      );
      assert.equal(await page.locator("#result").getAttribute("aria-live"), "polite");
      await shot(page, "03-redeemed");
      const [row] = await sql`
        select s.code as station from app.redemptions r
        join app.vouchers v on v.id = r.voucher_id join app.stations s on s.id = r.station_id
        where v.code = ${code.replaceAll("-", "")}`;
      assert.equal(row?.station, "DEMO-001");
    }),
});

Deno.test({
  name: "station PWA: a typo is refused offline by the check character, nothing is queued",
  ...opts,
  fn: () =>
    withStation(async ({ page, station, context }, sql) => {
      const world = await createWorld(sql);
      const [code] = await issueCodes(world, 1);
      await signIn(page, station.url, await operatorLogin(sql, world), PASSWORD);
      await context.setOffline(true);
      await page.locator('#banner[data-state="offline"]').waitFor();
      // Swap two neighbouring characters that differ: every adjacent swap is caught.
      const chars = code.replaceAll("-", "").split("");
      const i = chars.findIndex((c, j) => j < 14 && c !== chars[j + 1]);
      [chars[i], chars[i + 1]] = [chars[i + 1], chars[i]];
      await redeem(page, chars.join(""));
      await page.getByText("This code has a typo").waitFor();
      assert.equal(await page.getByLabel("Voucher code").getAttribute("aria-invalid"), "true");
      assert.equal(await page.evaluate(() => document.activeElement?.id), "code");
      assert.equal(await queued(page), 0);
      await shot(page, "04-typo-offline");
      assert.equal(await redemptions(sql, [code]), 0);
    }),
});

Deno.test({
  name: "station PWA: 20 redeems offline survive a reload and drain into exactly 20 redemptions",
  ...opts,
  fn: () =>
    withStation(async ({ page, station, context }, sql) => {
      const world = await createWorld(sql);
      const codes = await issueCodes(world, 20);
      await signIn(page, station.url, await operatorLogin(sql, world), PASSWORD);
      await context.setOffline(true);
      for (const code of codes) assert.match(await redeemAndWait(page, code), /^Saved /);
      await waitQueued(page, 20);
      assert.match(await page.locator("#banner").innerText(), /Offline — 20 redemptions waiting/);
      await shot(page, "05-offline-20-queued");

      await page.reload(); // still offline: the service worker serves the shell
      await page.waitForSelector("body[data-ready=true]");
      await waitQueued(page, 20);
      assert.equal(await page.getByLabel("Voucher code").isVisible(), true);
      await shot(page, "06-offline-after-reload");
      assert.equal(await redemptions(sql, codes), 0, "nothing reached the server while offline");

      await context.setOffline(false);
      await waitQueued(page, 0);
      await page.locator('#banner[data-state="online"]').waitFor();
      await shot(page, "07-drained");
      assert.equal(await redemptions(sql, codes), 20);
      assert.equal(await page.locator('#history li[data-state="redeemed"]').count(), 20);
    }),
});

Deno.test({
  name:
    "station PWA: the gateway killed during a flush and restarted — nothing lost, no duplicates",
  ...opts,
  fn: () =>
    withStation(async ({ page, station, context, gateway }, sql) => {
      const world = await createWorld(sql);
      const codes = await issueCodes(world, 10);
      await signIn(page, station.url, await operatorLogin(sql, world), PASSWORD);
      await context.setOffline(true);
      for (const code of codes) await redeemAndWait(page, code);
      await waitQueued(page, 10);

      // Hold one voucher's row lock so the flush is stuck inside the database …
      const blocker = ownerDb(1);
      let release!: () => void;
      const released = new Promise<void>((r) => release = r);
      const holding = blocker.begin(async (tx) => {
        await tx`select 1 from app.vouchers where code = ${
          codes[5].replaceAll("-", "")
        } for update`;
        await released;
      });
      try {
        await context.setOffline(false);
        // … until the flush's backend waits on that lock: the request is in flight.
        for (let i = 0; i < 100; i++) {
          const [{ n }] = await sql`
            select count(*)::int as n from pg_stat_activity
            where wait_event_type = 'Lock' and query like '%redeem_vouchers%'`;
          if (n > 0) break;
          await new Promise((r) => setTimeout(r, 100));
        }
        await gateway.kill(); // mid-flush, no goodbye
        await shot(page, "08-gateway-killed");
      } finally {
        release();
        await holding;
        await blocker.end();
      }
      await new Promise((r) => setTimeout(r, 500));
      await gateway.start(); // same port: the page's queue retries with backoff
      await waitQueued(page, 0, 60_000);
      await shot(page, "09-after-restart-drained");
      assert.equal(await redemptions(sql, codes), 10, "each voucher redeemed exactly once");
      const states = await page.locator("#history li").evaluateAll((lis) =>
        lis.map((li) => (li as HTMLElement).dataset.state)
      );
      assert.deepEqual(states, Array(10).fill("redeemed"), "every item answered as redeemed");
    }),
});

Deno.test({
  name: "station PWA: two tabs share one queue and never flush at the same time",
  ...opts,
  fn: () =>
    withStation(async ({ page, station, context }, sql) => {
      const world = await createWorld(sql);
      const codes = await issueCodes(world, 20);
      await signIn(page, station.url, await operatorLogin(sql, world), PASSWORD);
      const tab2 = await context.newPage();
      await load(tab2, station.url); // signed in already: the session is shared
      await tab2.getByLabel("Voucher code").waitFor();

      // Count flushes in flight across both tabs, each held a while to give them room to overlap.
      let inFlight = 0, maxInFlight = 0, flushes = 0;
      await context.route("**/rest/v1/rpc/redeem_vouchers", async (route) => {
        if (route.request().method() !== "POST") return route.continue();
        inFlight++;
        flushes++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        try {
          await new Promise((r) => setTimeout(r, 400));
          await route.continue();
        } finally {
          // the request is sent; count it out once its answer arrived
          setTimeout(() => inFlight--, 50);
        }
      });

      await context.setOffline(true);
      for (const [i, code] of codes.entries()) await redeemAndWait(i % 2 ? page : tab2, code);
      await waitQueued(page, 20);
      await waitQueued(tab2, 20);
      await shot(tab2, "10-two-tabs-queued");
      await context.setOffline(false);
      await waitQueued(page, 0, 60_000);
      await waitQueued(tab2, 0, 60_000);
      assert.equal(maxInFlight, 1, "one flush at a time across tabs (Web Locks)");
      assert.ok(flushes >= 1);
      assert.equal(await redemptions(sql, codes), 20);
      await tab2.close();
    }),
});

Deno.test({
  name: "station PWA: a voucher redeemed elsewhere while offline is shown to staff as a conflict",
  ...opts,
  fn: () =>
    withStation(async ({ page, station, context }, sql) => {
      const world = await createWorld(sql);
      const [code] = await issueCodes(world, 1);
      await signIn(page, station.url, await operatorLogin(sql, world), PASSWORD);
      await context.setOffline(true);
      await redeemAndWait(page, code);
      await waitQueued(page, 1);
      // Meanwhile, the other station redeems it online and wins.
      const [{ r }] = await sql`
        select app.redeem_one((${world.otherOperator.id}::uuid, 'station_operator', ${world.otherStationId}::uuid)::app.actor,
          ${world.otherStationId}::uuid, ${code}, ${crypto.randomUUID()}, now()) as r`;
      assert.equal(r.ok, true, JSON.stringify(r));
      await context.setOffline(false);
      await waitQueued(page, 0);
      const result = page.locator('#result[data-kind="conflict"]');
      await result.waitFor();
      const text = await result.innerText();
      assert.match(text, new RegExp(`Not redeemed: ${code} was already redeemed at Test B`));
      assert.equal(await page.locator('#history li[data-kind="conflict"]').count(), 1);
      await shot(page, "11-conflict");
      assert.equal(await redemptions(sql, [code]), 1);
    }),
});
