/**
 * Runs the diskless TFTP server alone in its own process for the benchmark,
 * so it does not share an event loop with the client measuring it.
 *   node dist/bench/tftp/serve.js ROOT PORT [ADDRESS]
 * Prints `listening PORT` when ready; stops on SIGTERM, printing on stderr
 * what its transfers did (`stats {...}`: files served, retransmissions,
 * windows that waited on a file read, files in the cache).
 */
import { FolderFileProvider } from '../../src/protocols/tftp/file-provider.js';
import { TftpServer } from '../../src/protocols/tftp/server.js';

const [root, portText, address = '127.0.0.1'] = process.argv.slice(2);
if (!root || !portText) {
  process.stderr.write('usage: serve.js ROOT PORT [ADDRESS]\n');
  process.exit(2);
}
const files = new FolderFileProvider({ root });
const server = new TftpServer({ files, maxTransfersPerClient: 64 });
const totals = { served: 0, failed: 0, retransmits: 0, readWaits: 0, readWaitTransfers: 0 };
server.on('served', (s) => {
  totals.served++;
  totals.retransmits += s.retransmits;
  totals.readWaits += s.readWaits ?? 0;
  if (s.readWaits) totals.readWaitTransfers++;
});
server.on('failed', () => totals.failed++);
const bound = await server.listen(Number(portText), address);
process.stdout.write(`listening ${bound.port}\n`);
process.on('SIGTERM', () => {
  void server.close().then(() => {
    process.stderr.write(`stats ${JSON.stringify({ ...totals, cache: files.cacheStats() })}\n`);
    process.exit(0);
  });
});
