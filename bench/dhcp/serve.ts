/**
 * Runs the diskless DHCP server in full mode for the benchmark, inside the
 * server namespace bench/dhcp/bench.ts creates. Prints `ready` once it
 * listens; stops on SIGTERM.
 *
 *   node dist/bench/dhcp/serve.js --interface NAME --address A --subnet CIDR --range START-END
 */
import { createLogger } from '../../src/lib/log.js';
import { InMemoryLeaseStore } from '../../src/protocols/dhcp/leases.js';
import { DefaultBootPolicy } from '../../src/protocols/dhcp/policy.js';
import { DhcpServer } from '../../src/protocols/dhcp/server.js';

const args = process.argv.slice(2);
const opt = (name: string): string => {
  const i = args.indexOf(`--${name}`);
  const v = i >= 0 ? args[i + 1] : undefined;
  if (v === undefined) {
    console.error(`missing --${name}`);
    process.exit(2);
  }
  return v;
};
const [start, end] = opt('range').split('-');
const address = opt('address');

const server = new DhcpServer({
  interfaces: [{ name: opt('interface'), address, mode: 'full' }],
  subnets: [{ subnet: opt('subnet'), ranges: [{ start: start!, end: end! }], routers: [address], leaseSeconds: 3600 }],
  // The same boot file dnsmasq is given (--dhcp-boot), so both replies carry one.
  policy: new DefaultBootPolicy({ scriptUrl: `http://${address}/boot/{mac}.ipxe` }),
  leaseStore: new InMemoryLeaseStore(),
  logger: createLogger({ level: 'warn', write: (l) => process.stderr.write(l + '\n'), pretty: false }),
});
await server.listen();
console.log('ready');
process.on('SIGTERM', () => {
  void server.close().then(() => {
    console.error(JSON.stringify({ stats: server.stats, leases: server.leases().length }));
    process.exit(0);
  });
});
