// A webhook receiver for switchhook, in Node's standard library and the official Standard
// Webhooks library: it verifies each request's signature and acts on each `webhook-id` once.
//
// switchhook delivers at least once: after a lost answer, a retry, or a `deliveries resend`,
// the same webhook arrives again with the same `webhook-id`. Keep the ids you have acted on
// (here in memory; use your database so a restart does not forget them) and answer a repeat
// with 2xx without acting again.
//
//     npm install standardwebhooks
//     WEBHOOK_SECRET=whsec_... node receiver.js 8080
//
// It prints one JSON line per request: the webhook id, its trigger and call, and whether it
// was new.

const http = require("http");
const { Webhook } = require("standardwebhooks");

const webhook = new Webhook(process.env.WEBHOOK_SECRET);
const seen = new Set();

http
  .createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString();
      // A GET carries its data in the query string, and that is what is signed.
      const query = req.url.includes("?") ? req.url.slice(req.url.indexOf("?") + 1) : "";
      const signed = req.method === "GET" ? query : body;
      try {
        webhook.verify(signed, req.headers, { jsonParse: false });
      } catch (e) {
        res.writeHead(401).end();
        console.log(JSON.stringify({ rejected: String(e.message) }));
        return;
      }
      const id = req.headers["webhook-id"];
      const isNew = !seen.has(id);
      if (isNew) {
        seen.add(id); // act here: open a ticket, update the CRM, ...
      }
      const payload = body.startsWith("{") ? JSON.parse(body) : {};
      console.log(
        JSON.stringify({
          webhook_id: id,
          trigger: payload.trigger ?? null,
          call: payload.cdr?.id ?? null,
          new: isNew,
        }),
      );
      res.writeHead(204).end();
    });
  })
  .listen(Number(process.argv[2]), "127.0.0.1");
