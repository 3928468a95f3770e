// A real Minecraft client that joins and stays online until its stdin closes (the live stats test's player).
//   MINEFLAYER_HOME=<npm prefix with mineflayer> node stay_bot.js HOST PORT USERNAME
// Prints one JSON line per event: spawn, end, error; exits 0 when stdin closes, 1 on an error or a kick.
'use strict'
const [host, port, username] = process.argv.slice(2)
const mineflayer = require(require.resolve('mineflayer', { paths: [process.env.MINEFLAYER_HOME] }))
const bot = mineflayer.createBot({ host, port: Number(port), username, auth: 'offline', version: '1.21.4' })
const out = (o) => console.log(JSON.stringify(o))
bot.once('spawn', () => out({ event: 'spawn' }))
bot.on('kicked', (reason) => { out({ event: 'kicked', reason: String(reason) }); process.exit(1) })
bot.on('error', (e) => { out({ event: 'error', error: String(e && e.message) }); process.exit(1) })
bot.on('end', (reason) => { out({ event: 'end', reason: String(reason) }); process.exit(1) })
process.stdin.on('end', () => { bot.removeAllListeners('end'); bot.quit('done'); setTimeout(() => process.exit(0), 500) })
process.stdin.resume()
