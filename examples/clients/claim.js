// Claim KEY_PATH from Node and finalize it, or say who has it.
//   node claim.js KEY_PATH NAME
"use strict";
const fs = require("fs");
const [path, name] = process.argv.slice(2);
let fd;
try {
  fd = fs.openSync(path, "wx");            // O_CREAT|O_EXCL: the claim
} catch (e) {
  if (e.code !== "EEXIST") throw e;
  let first = "gone";
  try { first = fs.readFileSync(path, "utf8").split("\n")[0]; } catch (_) {}
  console.log("lost: " + first);
  process.exit(0);
}
setTimeout(() => {                          // the work
  fs.writeSync(fd, "succeeded\n" + name + "\n");
  fs.closeSync(fd);                         // the commit; errors surface here
  console.log("won");
}, 100);
