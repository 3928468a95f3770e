// A real Minecraft client for the tests: an offline-mode mineflayer bot joins, says one line, and quits.
//   MINEFLAYER_HOME=<npm prefix with mineflayer> node chat_bot.js HOST PORT USERNAME MESSAGE
// Prints one JSON object per line: login, spawn, sent, chat (what the server sent back), end; exits 0 once
// the server has echoed the line back, 1 on an error or a kick, 3 after 30 s.
'use strict'
const [host, port, username, message] = process.argv.slice(2)
const mineflayer = require(require.resolve('mineflayer', { paths: [process.env.MINEFLAYER_HOME] }))

const t0 = Date.now()
const out = (o) => console.log(JSON.stringify({ ...o, ms: Date.now() - t0 }))
const bot = mineflayer.createBot({ host, port: Number(port), username, auth: 'offline', version: '1.21.4' })
let echoed = false
bot.once('login', () => out({ event: 'login', version: bot.version }))
bot.once('spawn', () => {
  out({ event: 'spawn' })
  bot.chat(message)
  out({ event: 'sent', message })
})
bot.on('messagestr', (text) => {
  out({ event: 'chat', text })
  if (!echoed && text.includes(message)) {
    echoed = true
    bot.quit('done')
  }
})
bot.on('kicked', (reason) => { out({ event: 'kicked', reason: String(reason) }); process.exitCode = 1 })
bot.on('error', (e) => { out({ event: 'error', error: String(e && e.message) }); process.exitCode = 1 })
bot.on('end', (reason) => {
  out({ event: 'end', reason: String(reason) })
  process.exit(echoed ? (process.exitCode || 0) : 1)
})
setTimeout(() => { out({ event: 'timeout' }); process.exit(3) }, 30000).unref()
