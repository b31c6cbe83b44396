// Connects to 127.0.0.1:PORT as NAME with NODE_EXTRA_CA_CERTS; prints ok/refused per pair.
const tls = require("tls");
const net = require("net");
const args = process.argv.slice(2);

async function probe(name, port) {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: "127.0.0.1", port: Number(port),
                                 servername: net.isIP(name) ? undefined : name,
                                 checkServerIdentity: (_, cert) => tls.checkServerIdentity(name, cert) });
    socket.on("secureConnect", () => { socket.end(); resolve("ok " + name); });
    socket.on("error", () => resolve("refused " + name));
  });
}

(async () => {
  for (let i = 0; i + 1 < args.length; i += 2) console.log(await probe(args[i], args[i + 1]));
})();
