// The OpenAI Node SDK's Responses API calls, run against a base URL: one scenario per run.
//
//   node responses_node.mjs '{"baseURL": ..., "apiKey": ..., "model": ..., "scenario": ...,
//                             "token": ...}'
//
// Prints one JSON line: {"result": what the scenario saw through the SDK, "traffic": every
// exchange as the wire carried it (method, url, status, content type, request body, response
// body text)}, so the Python test can assert on both and check each body and stream event
// against OpenAI's schema. On an error it prints {"error": {...}, "traffic": [...]} and exits 1.
import OpenAI from "openai";

import {options, recordingFetch, report} from "./recording.mjs";

const client = new OpenAI({baseURL: options.baseURL, apiKey: options.apiKey, maxRetries: 0,
                           timeout: 20000, fetch: recordingFetch});
const model = options.model;
const token = options.token;

const weatherTool = {type: "function", name: "get_weather", description: "The weather in a city",
                     strict: true,
                     parameters: {type: "object", properties: {city: {type: "string"}},
                                  required: ["city"], additionalProperties: false}};
const askWeather = `What is the weather? mock:tool get_weather {"city": "Paris"}`;

function summary(response) {
  return {id: response.id, status: response.status, model: response.model,
          output_text: response.output_text,
          output: response.output.map((item) => ({type: item.type, name: item.name,
                                                   arguments: item.arguments,
                                                   call_id: item.call_id})),
          previous_response_id: response.previous_response_id ?? null,
          usage: response.usage, requestId: response._request_id ?? null};
}

const scenarios = {
  async text() {
    return summary(await client.responses.create({
      model, instructions: "Answer briefly.", input: `Say hello ${token}`}));
  },

  // A function call, then its output sent back with the whole history (no stored state).
  async tool() {
    const input = [{role: "user", content: askWeather}];
    const first = await client.responses.create({model, input, tools: [weatherTool]});
    const calls = first.output.filter((item) => item.type === "function_call");
    const outputs = calls.map((call) => ({type: "function_call_output", call_id: call.call_id,
                                          output: `sunny ${token}`}));
    const second = await client.responses.create({
      model, input: [...input, ...first.output, ...outputs], tools: [weatherTool]});
    return {first: summary(first), second: summary(second)};
  },

  async structured() {
    const schema = {type: "object", additionalProperties: false, required: ["name", "age"],
                    properties: {name: {type: "string"}, age: {type: "integer", minimum: 0}}};
    const response = await client.responses.parse({
      model, input: `Describe a person ${token}`,
      text: {format: {type: "json_schema", name: "person", strict: true, schema}}});
    return {...summary(response), output_parsed: response.output_parsed};
  },

  // The second turn carries only the new message; the history is the stored first turn.
  async chained() {
    const first = await client.responses.create({model, input: `Remember ${token}`});
    const second = await client.responses.create({
      model, previous_response_id: first.id, input: "What did I ask you to remember?"});
    return {first: summary(first), second: summary(second)};
  },

  // The tool's output continues the stored response that called it.
  async chained_tool() {
    const first = await client.responses.create({model, input: askWeather,
                                                 tools: [weatherTool]});
    const [call] = first.output.filter((item) => item.type === "function_call");
    const second = await client.responses.create({
      model, previous_response_id: first.id, tools: [weatherTool],
      input: [{type: "function_call_output", call_id: call.call_id, output: `sunny ${token}`}]});
    return {first: summary(first), second: summary(second)};
  },

  // A stored response read back, its input listed, then deleted: retrieving it is a 404.
  async stored() {
    const created = await client.responses.create({model, input: `Keep this ${token}`});
    const retrieved = await client.responses.retrieve(created.id);
    const items = [];
    for await (const item of client.responses.inputItems.list(created.id)) items.push(item);
    const deleted = await client.responses.delete(created.id);
    let afterDelete = null;
    try {
      await client.responses.retrieve(created.id);
    } catch (error) {
      afterDelete = {name: error?.constructor?.name, status: error?.status ?? null,
                     code: error?.error?.code ?? null};
    }
    return {created: summary(created), retrieved: summary(retrieved),
            items: items.map((item) => ({type: item.type, role: item.role,
                                         content: item.content})),
            deleted: deleted ?? null, afterDelete};
  },

  async stream() {
    const stream = client.responses.stream({model, input: `Stream hello ${token}`});
    const events = [];
    const deltas = [];
    for await (const event of stream) {
      events.push({type: event.type, sequence_number: event.sequence_number});
      if (event.type === "response.output_text.delta") deltas.push(event.delta);
    }
    const final = await stream.finalResponse();
    return {events, deltas: deltas.join(""), final: summary(final)};
  },

  async stream_tool() {
    const stream = client.responses.stream({model, input: askWeather, tools: [weatherTool]});
    const events = [];
    let argumentsDone = null;
    for await (const event of stream) {
      events.push({type: event.type, sequence_number: event.sequence_number});
      if (event.type === "response.function_call_arguments.done") argumentsDone = event.arguments;
    }
    const final = await stream.finalResponse();
    return {events, argumentsDone, final: summary(final)};
  },
};

await report(scenarios[options.scenario],
             (error) => ({status: error?.status ?? null, body: error?.error ?? null}));
