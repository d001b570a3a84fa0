// mio-agent browser client: protocol version 1 (docs/protocol.md), no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const stats = { connected: 0, audioChunks: 0, samplesScheduled: 0, clears: 0, turnsEnded: 0, sentFrames: 0, events: 0 };
window.mioStats = stats;

const HEADER = 20;
const KIND = { AUDIO_IN: 1, IMAGE_IN: 2, AUDIO_OUT: 16, IMAGE_OUT: 17 };
let ws = null, session = null, lastSeq = 0, msgId = 0, streamId = 0;
let audioCtx = null, playHead = 0, sources = [], playing = { turn: -1, startedAt: 0, scheduledMs: 0 };
let micStream = null, micNode = null, micStreamId = 0, pendingImage = null;
const agentLines = {};

function line(cls, text) {
  const el = document.createElement("div");
  el.className = cls;
  el.textContent = text;
  $("log").appendChild(el);
  $("log").scrollTop = $("log").scrollHeight;
  return el;
}

function send(obj) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  obj.id = "b" + (++msgId);
  ws.send(JSON.stringify(obj));
}

function frame(kind, stream, payload) {
  const buf = new ArrayBuffer(HEADER + payload.byteLength);
  const v = new DataView(buf);
  v.setUint8(0, 1); v.setUint8(1, kind); v.setUint16(2, 0); v.setUint32(4, stream); v.setUint32(8, 0);
  v.setBigUint64(12, BigInt(Math.round(performance.now() * 1000)));
  new Uint8Array(buf, HEADER).set(new Uint8Array(payload));
  return buf;
}

// -- playback: Web Audio scheduling, cleared at once on playback.clear ---------------------------
function ctx() {
  if (!audioCtx) audioCtx = new AudioContext();
  return audioCtx;
}

function playPcm(turn, bytes) {
  const ac = ctx();
  const pcm = new Int16Array(bytes);
  const buffer = ac.createBuffer(1, pcm.length, 16000);
  const data = buffer.getChannelData(0);
  for (let i = 0; i < pcm.length; i++) data[i] = pcm[i] / 32768;
  const src = ac.createBufferSource();
  src.buffer = buffer;
  src.connect(ac.destination);
  const start = Math.max(ac.currentTime + 0.03, playHead);
  if (playing.turn !== turn) playing = { turn, startedAt: start, scheduledMs: 0 };
  src.start(start);
  playHead = start + buffer.duration;
  playing.scheduledMs += buffer.duration * 1000;
  sources.push(src);
  src.onended = () => { sources = sources.filter((s) => s !== src); };
  stats.audioChunks += 1;
  stats.samplesScheduled += pcm.length;
}

function playedMs() {
  if (!audioCtx || playing.turn < 0) return 0;
  return Math.max(0, Math.min(playing.scheduledMs, (audioCtx.currentTime - playing.startedAt) * 1000));
}

function clearPlayback(turn) {
  for (const s of sources) { try { s.stop(); } catch (e) { /* already stopped */ } }
  sources = [];
  if (audioCtx) playHead = audioCtx.currentTime;
  if (playing.turn >= 0) send({ type: "playback", turn: playing.turn, played_ms: playedMs() });
  playing = { turn: turn + 1, startedAt: 0, scheduledMs: 0 };
  stats.clears += 1;
  line("note", "■ playback cleared");
}

setInterval(() => {
  if (sources.length && playing.turn >= 0) send({ type: "playback", turn: playing.turn, played_ms: playedMs() });
}, 200);

// -- microphone: the browser's echo cancellation, PCM16 frames over the socket -------------------
const WORKLET = `
class Pcm16 extends AudioWorkletProcessor {
  constructor() { super(); this.buf = []; }
  process(inputs) {
    const ch = inputs[0][0];
    if (ch) {
      for (let i = 0; i < ch.length; i++) this.buf.push(Math.max(-1, Math.min(1, ch[i])) * 32767);
      if (this.buf.length >= sampleRate / 50) {
        this.port.postMessage(Int16Array.from(this.buf).buffer, []);
        this.buf = [];
      }
    }
    return true;
  }
}
registerProcessor("pcm16", Pcm16);`;

async function startMic() {
  const ac = ctx();
  await ac.resume();
  micStream = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
  });
  const url = URL.createObjectURL(new Blob([WORKLET], { type: "application/javascript" }));
  await ac.audioWorklet.addModule(url);
  const srcNode = ac.createMediaStreamSource(micStream);
  micNode = new AudioWorkletNode(ac, "pcm16");
  micStreamId = ++streamId;
  send({ type: "audio.start", stream: micStreamId, sample_rate: ac.sampleRate, channels: 1, format: "pcm16" });
  micNode.port.onmessage = (e) => {
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(frame(KIND.AUDIO_IN, micStreamId, e.data));
      stats.sentFrames += 1;
    }
  };
  srcNode.connect(micNode);
  $("mic").textContent = "🎤 Listening (click to stop)";
}

function stopMic() {
  if (micStream) micStream.getTracks().forEach((t) => t.stop());
  if (micNode) micNode.disconnect();
  send({ type: "audio.end", stream: micStreamId });
  micStream = null; micNode = null;
  $("mic").textContent = "🎤 Start talking";
}

// -- events ------------------------------------------------------------------------------------
function onEvent(ev) {
  stats.events += 1;
  const t = ev.type;
  if (t === "session.state") $("state").textContent = ev.state;
  else if (t === "input.level") $("bar").style.width = Math.max(0, Math.min(100, (ev.dbfs + 60) * 100 / 60)) + "%";
  else if (t === "user.turn") line("user", "you: " + (ev.text || `(spoke ${ev.speech_s.toFixed(1)} s)`));
  else if (t === "user.transcript") line("note", "heard: " + ev.text);
  else if (t === "turn.started") agentLines[ev.turn] = line("agent", ev.kind === "reply" ? "mio: " : `mio /${ev.kind}: `);
  else if (t === "text.delta") (agentLines[ev.turn] || (agentLines[ev.turn] = line("agent", "mio: "))).textContent += ev.text;
  else if (t === "capability.progress") line("note", `${ev.name}: ${ev.message}`);
  else if (t === "playback.clear") clearPlayback(ev.turn);
  else if (t === "turn.ended") { stats.turnsEnded += 1; line("note", `turn ${ev.turn} ${ev.reason}`); }
  else if (t === "metrics" && ev.stage === "first_audio") $("latency").textContent = `first audio ${(ev.seconds * 1000).toFixed(0)} ms`;
  else if (t === "image.out" && ev.png && ev.png.bytes) pendingImage = ev;
  else if (t === "error") line("error", `error ${ev.code}: ${ev.message}`);
}

function onBinary(buf) {
  const v = new DataView(buf);
  const kind = v.getUint8(1), stream = v.getUint32(4), seq = v.getUint32(8);
  lastSeq = Math.max(lastSeq, seq);
  const payload = buf.slice(HEADER);
  if (kind === KIND.AUDIO_OUT) {
    if (stream >= playing.turn || playing.turn < 0) playPcm(stream, payload);
  } else if (kind === KIND.IMAGE_OUT) {
    const img = document.createElement("img");
    img.className = "out";
    img.src = URL.createObjectURL(new Blob([payload], { type: "image/png" }));
    $("log").appendChild(img);
    pendingImage = null;
  }
}

function connect() {
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => {
    const hello = { type: "hello", protocol: 1, client: "mio-agent-browser" };
    const token = new URLSearchParams(location.search).get("token");
    if (token) hello.token = token;
    if (session) hello.resume = { session, last_seq: lastSeq };
    ws.send(JSON.stringify(hello));
  };
  ws.onmessage = (m) => {
    if (typeof m.data !== "string") return onBinary(m.data);
    const msg = JSON.parse(m.data);
    if (msg.seq) lastSeq = Math.max(lastSeq, msg.seq);
    if (msg.type === "welcome") {
      session = msg.session;
      stats.connected += 1;
      $("conn").textContent = (msg.resumed ? "resumed " : "session ") + session;
      const caps = $("caps");
      if (caps.options.length === 1) {
        for (const c of msg.capabilities) {
          const o = document.createElement("option");
          o.value = c.name; o.textContent = `${c.name}: ${c.description}`;
          caps.appendChild(o);
        }
      }
    } else if (msg.type === "event") onEvent(msg.event);
    else if (msg.type === "error") line("error", `error ${msg.code}: ${msg.message}`);
  };
  ws.onclose = (e) => {
    $("conn").textContent = `disconnected (${e.code}); reconnecting…`;
    setTimeout(connect, 1000);
  };
}

$("form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("text").value.trim();
  const cap = $("caps").value;
  if (cap) send({ type: "invoke", name: cap, text });
  else if (text) send({ type: "text", text });
  $("text").value = "";
  ctx().resume();
});
$("mic").addEventListener("click", () => (micStream ? stopMic() : startMic().catch((err) => line("error", "microphone: " + err.message))));
$("stop").addEventListener("click", () => { send({ type: "interrupt" }); clearPlayback(playing.turn); });
window.mio = { startMic, stopMic, send, stats };
connect();
