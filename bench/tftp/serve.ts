/**
 * Runs the diskless TFTP server alone in its own process for the benchmark,
 * so it does not share an event loop with the client measuring it.
 *   node dist/bench/tftp/serve.js ROOT PORT [ADDRESS]
 * Prints `listening PORT` when ready; stops on SIGTERM.
 */
import { FolderFileProvider } from '../../src/protocols/tftp/file-provider.js';
import { TftpServer } from '../../src/protocols/tftp/server.js';

const [root, portText, address = '127.0.0.1'] = process.argv.slice(2);
if (!root || !portText) {
  process.stderr.write('usage: serve.js ROOT PORT [ADDRESS]\n');
  process.exit(2);
}
const server = new TftpServer({ files: new FolderFileProvider({ root }), maxTransfersPerClient: 64 });
const bound = await server.listen(Number(portText), address);
process.stdout.write(`listening ${bound.port}\n`);
process.on('SIGTERM', () => {
  void server.close().then(() => process.exit(0));
});
