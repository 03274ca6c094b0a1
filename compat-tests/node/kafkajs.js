'use strict';
// kafkajs as a Kafka client: one admin, producers by name and consumers by name over one Kafka
// instance (`init` first). What consumers receive is collected until a test asks for it.
// Keys, values and header values cross the JSON boundary as text.

// kafkajs 2 warns at every producer that its default partitioner changed in 2.0.
process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1';
const { Kafka, CompressionTypes, logLevel } = require('kafkajs');
const { serve, Waiters, text } = require('./adapter');

let kafka = null;
let admin = null;
const producers = new Map(); // name -> connected producer
const consumers = new Map(); // name -> {consumer, messages, assignments}
const arrived = new Waiters();

const CODECS = { none: CompressionTypes.None, gzip: CompressionTypes.GZIP };

function client() {
  if (kafka === null) throw new Error('send {"op":"init","brokers":[...]} first');
  return kafka;
}

async function theAdmin() {
  if (admin === null) {
    admin = client().admin();
    await admin.connect();
  }
  return admin;
}

// kafkajs logs through its logCreator: to stderr, which the suite shows when a test fails.
const toStderr = () => ({ namespace, label, log }) => {
  const { message, ...rest } = log;
  process.stderr.write(`kafkajs ${label} [${namespace}] ${message} ${JSON.stringify(rest)}\n`);
};

function consumerNamed(name) {
  const c = consumers.get(name);
  if (!c) throw new Error(`no consumer ${JSON.stringify(name)}`);
  return c;
}

function record(topic, partition, m) {
  const headers = {};
  for (const [k, v] of Object.entries(m.headers ?? {})) headers[k] = Array.isArray(v) ? v.map(text) : text(v);
  const batch = m.batchContext ?? {};
  return {
    topic,
    partition,
    offset: Number(m.offset),
    key: text(m.key),
    value: text(m.value),
    headers,
    timestamp: Number(m.timestamp),
    // The record batch as stored by the broker: an idempotent producer's id and sequence.
    producerId: batch.producerId === undefined ? null : Number(batch.producerId),
    firstSequence: batch.firstSequence ?? null,
  };
}

serve({
  // {brokers: ["h:p"], clientId}
  async init(a) {
    kafka = new Kafka({
      clientId: a.clientId ?? 'switchboard-compat',
      brokers: a.brokers,
      logLevel: logLevel.WARN,
      logCreator: toStderr,
      connectionTimeout: 5000,
      requestTimeout: 10000,
      retry: { initialRetryTime: 100, retries: 5 },
    });
  },

  // {topics: [{topic, numPartitions, configEntries}]} -> {created}: false when they existed
  async createTopics(a) {
    const created = await (await theAdmin()).createTopics({ topics: a.topics, waitForLeaders: true });
    return { created };
  },

  async listTopics() {
    return { topics: await (await theAdmin()).listTopics() };
  },

  async fetchTopicMetadata(a) {
    return (await theAdmin()).fetchTopicMetadata({ topics: a.topics });
  },

  async createPartitions(a) {
    await (await theAdmin()).createPartitions({ topicPartitions: a.topicPartitions });
  },

  async deleteTopics(a) {
    await (await theAdmin()).deleteTopics({ topics: a.topics });
  },

  // {topic} -> {partitions: [{partition, offset, high, low}]}
  async fetchTopicOffsets(a) {
    return { partitions: await (await theAdmin()).fetchTopicOffsets(a.topic) };
  },

  // {topic, timestamp} -> {partitions: [{partition, offset}]}
  async fetchTopicOffsetsByTimestamp(a) {
    return { partitions: await (await theAdmin()).fetchTopicOffsetsByTimestamp(a.topic, a.timestamp) };
  },

  // {groupId, topics} -> {topics: [{topic, partitions: [{partition, offset}]}]}
  async fetchOffsets(a) {
    return { topics: await (await theAdmin()).fetchOffsets({ groupId: a.groupId, topics: a.topics }) };
  },

  // {producer: name, idempotent, topic, messages: [{key, value, headers, partition, timestamp}],
  //  acks, compression: "none" | "gzip"} -> {records: [{partition, baseOffset, errorCode}]}.
  // A named producer stays connected for the next produce with that name.
  async produce(a) {
    const name = a.producer ?? 'default';
    let producer = producers.get(name);
    if (!producer) {
      producer = client().producer({
        idempotent: Boolean(a.idempotent),
        maxInFlightRequests: a.idempotent ? 1 : undefined,
        allowAutoTopicCreation: a.allowAutoTopicCreation ?? true,
      });
      await producer.connect();
      producers.set(name, producer);
    }
    const codec = CODECS[a.compression ?? 'none'];
    if (codec === undefined) throw new Error(`compression ${a.compression}: kafkajs has none built in`);
    const sent = await producer.send({
      topic: a.topic,
      messages: a.messages,
      acks: a.acks ?? -1,
      compression: codec,
    });
    return {
      records: sent.map((r) => ({
        partition: r.partition,
        baseOffset: Number(r.baseOffset),
        errorCode: r.errorCode,
      })),
    };
  },

  // {consumer: name, groupId, topics, fromBeginning, autoCommit} -> once the consumer runs.
  // Messages are collected for `expect`; every group join is kept for `assignment`.
  async consume(a) {
    const consumer = client().consumer({
      groupId: a.groupId,
      sessionTimeout: a.sessionTimeout ?? 10000,
      heartbeatInterval: a.heartbeatInterval ?? 500,
      maxWaitTimeInMs: 200,
      retry: { initialRetryTime: 100, retries: 5 },
    });
    const entry = { consumer, messages: [], joins: [] };
    consumers.set(a.consumer, entry);
    consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
      entry.joins.push({ memberId: payload.memberId, assignment: payload.memberAssignment });
      arrived.notify();
    });
    await consumer.connect();
    await consumer.subscribe({ topics: a.topics, fromBeginning: a.fromBeginning ?? true });
    await consumer.run({
      autoCommit: a.autoCommit ?? false,
      eachMessage: async ({ topic, partition, message }) => {
        entry.messages.push(record(topic, partition, message));
        arrived.notify();
      },
    });
  },

  // {consumer, count, timeoutMs} -> {complete, messages}: every message so far, in arrival order.
  async expect(a) {
    const entry = consumerNamed(a.consumer);
    const complete = await arrived.until(() => entry.messages.length >= a.count, a.timeoutMs ?? 5000);
    return { complete, messages: [...entry.messages] };
  },

  // {consumer, joins, timeoutMs} -> {complete, joins: [{memberId, assignment}]}: waits until
  // the consumer joined its group `joins` times.
  async assignment(a) {
    const entry = consumerNamed(a.consumer);
    const complete = await arrived.until(() => entry.joins.length >= (a.joins ?? 1), a.timeoutMs ?? 5000);
    return { complete, joins: entry.joins };
  },

  // {consumer, offsets: [{topic, partition, offset}]}: offset = the next one to read.
  async commit(a) {
    await consumerNamed(a.consumer).consumer.commitOffsets(
      a.offsets.map((o) => ({ topic: o.topic, partition: o.partition, offset: String(o.offset) })),
    );
  },

  // {consumer}: leaves the group.
  async stop(a) {
    const entry = consumerNamed(a.consumer);
    consumers.delete(a.consumer);
    await entry.consumer.disconnect();
  },

  async close() {
    await Promise.allSettled([...consumers.values()].map((c) => c.consumer.disconnect()));
    await Promise.allSettled([...producers.values()].map((p) => p.disconnect()));
    if (admin !== null) await admin.disconnect();
  },
});
