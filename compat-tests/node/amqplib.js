'use strict';
// amqplib (promise API) as one AMQP 0-9-1 connection with numbered channels (`channel`, 1 unless
// given; opened on first use, as a confirm channel with `confirm: true`). Deliveries to each
// consumer are collected until a test asks for them; acks refer to them by delivery tag.
// Bodies cross the JSON boundary as text.

const amqp = require('amqplib');
const { serve, Waiters, text } = require('./adapter');

let connection = null;
const channels = new Map(); // number -> channel
const deliveries = new Map(); // consumer tag -> [delivery]
const arrived = new Waiters();

async function channel(a) {
  if (connection === null) throw new Error('send {"op":"connect","url":...} first');
  const n = a.channel ?? 1;
  let ch = channels.get(n);
  if (!ch) {
    ch = a.confirm ? await connection.createConfirmChannel() : await connection.createChannel();
    // A channel the broker closes says why here; the next command on it fails.
    ch.on('error', (e) => process.stderr.write(`channel ${n}: ${e.message}\n`));
    ch.on('close', () => channels.delete(n));
    channels.set(n, ch);
  }
  return ch;
}

// A field-table value in JSON terms: 64-bit integers as numbers, byte arrays as text.
function plain(value) {
  if (typeof value === 'bigint') return Number(value);
  if (Buffer.isBuffer(value)) return text(value);
  if (value instanceof Date) return value.getTime();
  if (Array.isArray(value)) return value.map(plain);
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
  }
  return value;
}

function delivery(msg) {
  const { fields, properties } = msg;
  return {
    body: text(msg.content),
    deliveryTag: fields.deliveryTag,
    redelivered: fields.redelivered,
    exchange: fields.exchange,
    routingKey: fields.routingKey,
    messageCount: fields.messageCount,
    properties: plain(Object.fromEntries(Object.entries(properties).filter(([, v]) => v !== undefined))),
  };
}

// amqplib acknowledges a message object; only its delivery tag matters.
const tagged = (deliveryTag) => ({ fields: { deliveryTag } });

serve({
  // {url}
  async connect(a) {
    connection = await amqp.connect(a.url);
    connection.on('error', (e) => process.stderr.write(`connection: ${e.message}\n`));
    return { serverProperties: plain(connection.connection.serverProperties ?? {}) };
  },

  // {channel, confirm}: opens the channel now (e.g. as a confirm channel).
  async open(a) {
    await channel(a);
  },

  // {exchange, type, options: {durable, autoDelete, internal, arguments}}
  async assertExchange(a) {
    await (await channel(a)).assertExchange(a.exchange, a.type, a.options ?? {});
  },

  // {queue, options: {exclusive, durable, autoDelete, messageTtl, deadLetterExchange,
  //  deadLetterRoutingKey, maxLength, arguments}} -> {queue, messageCount, consumerCount}
  async assertQueue(a) {
    return (await channel(a)).assertQueue(a.queue ?? '', a.options ?? {});
  },

  // {queue} -> {queue, messageCount, consumerCount}
  async checkQueue(a) {
    return (await channel(a)).checkQueue(a.queue);
  },

  async bindQueue(a) {
    await (await channel(a)).bindQueue(a.queue, a.exchange, a.pattern ?? '', a.args);
  },

  async deleteQueue(a) {
    return (await channel(a)).deleteQueue(a.queue, a.options ?? {});
  },

  // {exchange, routingKey, body, options: {headers, contentType, correlationId, messageId,
  //  persistent, expiration, ...}}. On a confirm channel, resolves once the broker confirmed
  //  it and fails on a nack.
  async publish(a) {
    const ch = await channel(a);
    const body = Buffer.from(a.body ?? '');
    if (typeof ch.waitForConfirms !== 'function') {
      ch.publish(a.exchange ?? '', a.routingKey ?? '', body, a.options ?? {});
      return { confirmed: false };
    }
    await new Promise((resolve, reject) => {
      ch.publish(a.exchange ?? '', a.routingKey ?? '', body, a.options ?? {}, (err) =>
        err ? reject(new Error(`broker nacked the publish: ${err}`)) : resolve(),
      );
    });
    return { confirmed: true };
  },

  // {bodies: [...], exchange, routingKey}: publishes them all on a confirm channel, then waits
  // for the broker to confirm every one.
  async publishAllConfirmed(a) {
    const ch = await channel({ ...a, confirm: true });
    let acked = 0;
    let nacked = 0;
    for (const body of a.bodies) {
      ch.publish(a.exchange ?? '', a.routingKey ?? '', Buffer.from(body), a.options ?? {}, (err) => {
        if (err) nacked += 1;
        else acked += 1;
      });
    }
    await ch.waitForConfirms();
    return { acked, nacked };
  },

  // {count, global}
  async prefetch(a) {
    await (await channel(a)).prefetch(a.count, Boolean(a.global));
  },

  // {queue, noAck, exclusive} -> {consumerTag}
  async consume(a) {
    const received = [];
    const ok = await (await channel(a)).consume(
      a.queue,
      (msg) => {
        if (msg !== null) received.push(delivery(msg));
        arrived.notify();
      },
      { noAck: Boolean(a.noAck), exclusive: Boolean(a.exclusive) },
    );
    deliveries.set(ok.consumerTag, received);
    return { consumerTag: ok.consumerTag };
  },

  // {consumer: tag, count, timeoutMs} -> {complete, messages}: every delivery so far.
  async expect(a) {
    const received = deliveries.get(a.consumer);
    if (!received) throw new Error(`no consumer ${JSON.stringify(a.consumer)}`);
    const complete = await arrived.until(() => received.length >= a.count, a.timeoutMs ?? 5000);
    return { complete, messages: [...received] };
  },

  async cancel(a) {
    await (await channel(a)).cancel(a.consumer);
  },

  // {queue, noAck} -> {message: delivery | null}
  async get(a) {
    const msg = await (await channel(a)).get(a.queue, { noAck: Boolean(a.noAck) });
    return { message: msg === false ? null : delivery(msg) };
  },

  async ack(a) {
    (await channel(a)).ack(tagged(a.deliveryTag), Boolean(a.multiple));
  },

  async nack(a) {
    (await channel(a)).nack(tagged(a.deliveryTag), Boolean(a.multiple), a.requeue ?? true);
  },

  async reject(a) {
    (await channel(a)).reject(tagged(a.deliveryTag), a.requeue ?? true);
  },

  async close() {
    if (connection !== null) await connection.close();
  },
});
