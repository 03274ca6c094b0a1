'use strict';
// mqtt.js (npm `mqtt`) as one MQTT client: connect, subscribe, publish, collect what arrives.
// One process is one client; the suite starts one per peer (compat-tests/python/adapterkit.py)
// and ends it with SIGKILL when a test needs a connection that drops without DISCONNECT.

const mqtt = require('mqtt');
const { serve, Waiters, text } = require('./adapter');

let client = null;
const messages = [];
const sent = []; // PUBLISH packets as written: {topic, topicAlias}
const arrived = new Waiters();

function current() {
  if (client === null) throw new Error('not connected: send {"op":"connect"} first');
  return client;
}

// MQTT 5 properties of a received PUBLISH in JSON terms (binary fields as text).
function properties(props) {
  if (!props) return null;
  const out = { ...props };
  if (out.correlationData !== undefined) out.correlationData = text(out.correlationData);
  return out;
}

function will(w) {
  if (!w) return undefined;
  return {
    topic: w.topic,
    payload: Buffer.from(w.payload ?? ''),
    qos: w.qos ?? 0,
    retain: Boolean(w.retain),
    properties: w.properties,
  };
}

serve({
  // {url: "mqtt://h:p" | "ws://h:p/mqtt", protocolVersion: 4|5, clientId, clean, sessionExpiry,
  //  keepalive, username, password, will: {topic, payload, qos, retain, properties},
  //  topicAliasMaximum (aliases the broker may use towards us), autoAssignTopicAlias (ours)}
  async connect(a) {
    const opts = {
      protocolVersion: a.protocolVersion ?? 4,
      clientId: a.clientId,
      clean: a.clean ?? true,
      keepalive: a.keepalive ?? 30,
      username: a.username,
      password: a.password,
      will: will(a.will),
      reconnectPeriod: 0, // a test sees every connection it makes; nothing reconnects behind it
      connectTimeout: a.timeoutMs ?? 5000,
      autoAssignTopicAlias: Boolean(a.autoAssignTopicAlias),
    };
    if (opts.protocolVersion === 5) {
      opts.properties = {};
      if (a.sessionExpiry !== undefined) opts.properties.sessionExpiryInterval = a.sessionExpiry;
      if (a.topicAliasMaximum !== undefined) opts.properties.topicAliasMaximum = a.topicAliasMaximum;
    }
    const c = mqtt.connect(a.url, opts);
    c.on('message', (topic, payload, packet) => {
      messages.push({
        topic,
        payload: text(payload),
        qos: packet.qos,
        retain: Boolean(packet.retain),
        properties: properties(packet.properties),
      });
      arrived.notify();
    });
    c.on('packetsend', (packet) => {
      if (packet.cmd !== 'publish') return;
      sent.push({ topic: packet.topic, topicAlias: packet.properties?.topicAlias ?? null });
    });
    c.on('error', (e) => process.stderr.write(`mqtt error: ${e.message}\n`));
    const connack = await new Promise((resolve, reject) => {
      c.once('connect', resolve);
      c.once('error', reject); // a refusing CONNACK, too
      c.once('close', () => reject(new Error('connection closed before CONNACK')));
    }).catch((e) => {
      c.end(true);
      throw e;
    });
    client = c;
    return {
      sessionPresent: Boolean(connack.sessionPresent),
      reasonCode: connack.reasonCode ?? connack.returnCode ?? 0,
      properties: connack.properties ?? null,
    };
  },

  // {topics: {"a/b": qos, ...}, properties: {...} (MQTT 5)}
  async subscribe(a) {
    const map = Object.fromEntries(Object.entries(a.topics).map(([t, qos]) => [t, { qos }]));
    const granted = await current().subscribeAsync(map, a.properties ? { properties: a.properties } : {});
    return { granted: granted.map((g) => ({ topic: g.topic, qos: g.qos })) };
  },

  async unsubscribe(a) {
    await current().unsubscribeAsync(a.topics);
  },

  // {topic, payload, qos, retain, properties}; resolves once the broker acknowledged it
  // (PUBACK for QoS 1, PUBCOMP for QoS 2), or once written for QoS 0.
  async publish(a) {
    await current().publishAsync(a.topic, a.payload ?? '', {
      qos: a.qos ?? 0,
      retain: Boolean(a.retain),
      properties: a.properties,
    });
  },

  // Waits until `count` messages arrived in all (or `timeoutMs` passed); returns every message
  // so far in arrival order, and whether the count was reached.
  async expect(a) {
    const complete = await arrived.until(() => messages.length >= a.count, a.timeoutMs ?? 5000);
    return { complete, messages: [...messages] };
  },

  // -> {packets: [{topic, topicAlias}]}: every PUBLISH this client wrote, as written.
  async sent() {
    return { packets: [...sent] };
  },

  // A normal DISCONNECT; the will is discarded.
  async end() {
    if (client !== null) await client.endAsync();
    client = null;
  },

  async close() {
    if (client !== null) client.end(true);
  },
});
