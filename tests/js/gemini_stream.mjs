// Stream one reply through a gateway with Google's Gen AI SDK (@google/genai), on the
// Gemini API's paths (POST {base}/v1beta/models/MODEL:streamGenerateContent?alt=sse).
//
//   node gemini_stream.mjs BASE_URL MODEL [PROMPT] [--tool ANSWER_MODEL]
//
// Prints one JSON line per chunk, on stdout:
//   {"type":"chunk","text":"...","functionCalls":[...],"finishReason":...}
// then, with --tool, the second turn's chunks the same way after
//   {"type":"tool-result","name":...}   (a functionResponse for every call sent back)
// and last
//   {"type":"finish","text":...,"finishReason":...,"usage":{...},"responseId":...}
// Exits 1 (the error on stderr) when the SDK throws. With --tool the model is offered two
// functions, get_weather({city}) and get_time({tz}); the calls it makes are answered and
// sent back once, to ANSWER_MODEL.

import { GoogleGenAI } from "@google/genai";

const args = process.argv.slice(2);
const toolAt = args.indexOf("--tool");
const withTool = toolAt >= 0;
const answerModel = withTool ? args[toolAt + 1] : undefined;
const positional = withTool ? [...args.slice(0, toolAt), ...args.slice(toolAt + 2)] : args;
const [baseUrl, model, prompt = "Say hello."] = positional;
if (!baseUrl || !model || (withTool && !answerModel)) {
  console.error("usage: node gemini_stream.mjs BASE_URL MODEL [PROMPT] [--tool ANSWER_MODEL]");
  process.exit(2);
}

const print = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const tools = [
  {
    functionDeclarations: [
      {
        name: "get_weather",
        description: "The current weather in a city.",
        parameters: {
          type: "OBJECT",
          properties: { city: { type: "STRING" } },
          required: ["city"],
        },
      },
      {
        name: "get_time",
        description: "The time in a time zone.",
        parameters: { type: "OBJECT", properties: { tz: { type: "STRING" } } },
      },
    ],
  },
];

async function turn(ai, name, contents) {
  const stream = await ai.models.generateContentStream({
    model: name,
    contents,
    config: withTool ? { tools } : {},
  });
  let text = "";
  const calls = [];
  let last = null;
  for await (const chunk of stream) {
    const candidate = chunk.candidates?.[0];
    const piece = chunk.text ?? "";
    text += piece;
    for (const call of chunk.functionCalls ?? []) {
      calls.push(call);
    }
    print({
      type: "chunk",
      text: piece,
      functionCalls: chunk.functionCalls ?? [],
      finishReason: candidate?.finishReason ?? null,
    });
    last = chunk;
  }
  return { text, calls, last };
}

async function main() {
  const ai = new GoogleGenAI({
    apiKey: process.env.GEMINI_TEST_KEY ?? "unused",
    httpOptions: { baseUrl, apiVersion: "v1beta" },
  });
  const contents = [{ role: "user", parts: [{ text: prompt }] }];
  let result = await turn(ai, model, contents);
  if (withTool && result.calls.length > 0) {
    contents.push({
      role: "model",
      parts: result.calls.map((call) => ({ functionCall: call })),
    });
    contents.push({
      role: "user",
      parts: result.calls.map((call) => {
        print({ type: "tool-result", name: call.name, id: call.id ?? null });
        return {
          functionResponse: {
            ...(call.id ? { id: call.id } : {}),
            name: call.name,
            response: { output: `sunny and 21 C in ${call.args?.city ?? "?"}` },
          },
        };
      }),
    });
    result = await turn(ai, answerModel, contents);
  }
  const last = result.last;
  print({
    type: "finish",
    text: result.text,
    finishReason: last?.candidates?.[0]?.finishReason ?? null,
    usage: last?.usageMetadata ?? null,
    responseId: last?.responseId ?? null,
    modelVersion: last?.modelVersion ?? null,
  });
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(String(error?.stack ?? error));
    process.exit(1);
  },
);
