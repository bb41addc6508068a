/**
 * The local gateway's public interface — what code outside `local/gateway/`
 * may use. Everything else in this folder (`_*.ts`) is private to the gateway.
 *
 * - {@link serveGateway} starts a gateway in this process (tests use one on a
 *   spare port; `main.ts` is the process entry point `deno task start` runs);
 * - {@link rpcStatement} renders the one-round-trip SQL the gateway sends for one
 *   RPC call, so a benchmark can send the very same statement directly and
 *   measure what the gateway adds around it.
 *
 * @example
 * import { serveGateway } from "./local/gateway/mod.ts";
 * const gw = await serveGateway({ port: 0, log: false });
 * const res = await fetch(`${gw.url}/health`);
 * await gw.shutdown();
 *
 * @example
 * import { type Routine, rpcStatement } from "./local/gateway/mod.ts";
 * const routine: Routine = {
 *   schema: "api", name: "add", volatility: "s",
 *   params: [{ name: "a", type: "integer", required: true, variadic: false }],
 *   returnsSet: false, returnsVoid: false, returnsComposite: false,
 * };
 * rpcStatement({
 *   readOnly: true, settings: [["role", "authenticated"]], routine,
 *   args: { kind: "named", json: '{"a":1}', keys: ["a"] },
 *   maxRows: null, countTotal: false, stripNulls: false,
 * }); // "set transaction read only;\nselect pg_catalog.set_config(…);\nselect …"
 *
 * @module
 */
export { serveGateway } from "./server.ts";
export type { Gateway, GatewayOptions } from "./server.ts";
export { rpcStatement } from "./_sql.ts";
export type { CallArgs, RpcStatement } from "./_sql.ts";
export type { Routine, RoutineParam } from "./_schema_cache.ts";
