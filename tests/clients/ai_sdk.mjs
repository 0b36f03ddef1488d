// The Vercel AI SDK against a base URL: createOpenAI({baseURL, apiKey})(model), whose default
// (AI SDK 5 and later) is OpenAI's Responses API. One scenario per run:
//
//   node ai_sdk.mjs '{"baseURL": ..., "apiKey": ..., "model": ..., "scenario": ..., "token": ...}'
//
// Prints one JSON line: {"result": what the SDK returned, "traffic": every exchange as the wire
// carried it (method, url, status, content type, request body, response body text)}; on an
// error {"error": {...}, "traffic": [...]} and exits 1.
import {createOpenAI} from "@ai-sdk/openai";
import {generateText, jsonSchema, Output, stepCountIs, streamText, tool} from "ai";

import {options, recordingFetch, report} from "./recording.mjs";

const provider = createOpenAI({baseURL: options.baseURL, apiKey: options.apiKey,
                               fetch: recordingFetch});
const model = provider(options.model);
const token = options.token;
// No retries: a failure shows at once, and every request in the traffic is the SDK's own.
const common = {model, maxRetries: 0, abortSignal: AbortSignal.timeout(20000)};

// The tool the mock is asked to call; the SDK runs it and sends its result back.
const tools = {
  get_weather: tool({
    description: "The weather in a city",
    inputSchema: jsonSchema({type: "object", properties: {city: {type: "string"}},
                             required: ["city"], additionalProperties: false}),
    execute: async ({city}) => `sunny in ${city} ${token}`,
  }),
};
const askWeather = `What is the weather? mock:tool get_weather {"city": "Paris"}`;

function steps(result) {
  return result.steps.map((step) => ({
    finishReason: step.finishReason, text: step.text,
    toolCalls: step.toolCalls.map((call) => ({toolName: call.toolName, input: call.input})),
    toolResults: step.toolResults.map((r) => ({toolName: r.toolName, output: r.output}))}));
}

const scenarios = {
  async generate() {
    const result = await generateText({...common, prompt: `Say hello ${token}`});
    return {text: result.text, finishReason: result.finishReason, usage: result.usage,
            modelId: result.response.modelId};
  },

  async generate_tool() {
    const result = await generateText({...common, prompt: askWeather, tools,
                                       stopWhen: stepCountIs(3)});
    return {text: result.text, finishReason: result.finishReason, steps: steps(result)};
  },

  // Structured output: the schema goes as text.format json_schema; the SDK parses the answer.
  async object() {
    const schema = jsonSchema({type: "object", additionalProperties: false,
                               required: ["name", "age"],
                               properties: {name: {type: "string"},
                                            age: {type: "integer", minimum: 0}}});
    const result = await generateText({...common, prompt: `Describe a person ${token}`,
                                       output: Output.object({schema})});
    return {output: result.output, text: result.text};
  },

  // A chat app's second turn: the first turn's messages as the SDK returned them, then a
  // new question (with store on, the SDK's default, it may refer to stored items by id).
  async conversation() {
    const first = await generateText({...common, prompt: `Remember ${token}`});
    const messages = [{role: "user", content: `Remember ${token}`}, ...first.response.messages,
                      {role: "user", content: "What did I ask you to remember?"}];
    const second = await generateText({...common, messages});
    return {first: first.text, second: second.text, modelId: second.response.modelId};
  },

  async stream() {
    const result = streamText({...common, prompt: `Stream hello ${token}`,
                               onError: ({error}) => { throw error; }});
    const pieces = [];
    for await (const piece of result.textStream) pieces.push(piece);
    return {pieces, text: await result.text, finishReason: await result.finishReason,
            usage: await result.usage};
  },

  async stream_tool() {
    const result = streamText({...common, prompt: askWeather, tools, stopWhen: stepCountIs(3),
                               onError: ({error}) => { throw error; }});
    const pieces = [];
    for await (const piece of result.textStream) pieces.push(piece);
    return {pieces, text: await result.text, finishReason: await result.finishReason,
            steps: steps({steps: await result.steps})};
  },
};

await report(scenarios[options.scenario],
             (error) => ({status: error?.statusCode ?? null, body: error?.responseBody ?? null}));
