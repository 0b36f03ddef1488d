// What both Responses client scripts share: the SDK's fetch, teed so that every exchange is
// recorded as the wire carried it, and the one JSON line a run prints for the Python test.
export const options = JSON.parse(process.argv[2]);
const traffic = [];
const pending = [];

// The SDK's fetch, teed: the SDK reads one copy, the other is recorded whole.
export async function recordingFetch(url, init) {
  const response = await fetch(url, init);
  const entry = {method: init?.method ?? "GET", url: String(url), status: response.status,
                 contentType: response.headers.get("content-type") ?? "",
                 requestId: response.headers.get("x-request-id"),
                 request: typeof init?.body === "string" ? JSON.parse(init.body) : null};
  traffic.push(entry);
  pending.push(response.clone().text().then((text) => { entry.body = text; }));
  return response;
}

// Runs `scenario` and prints {"result", "traffic"}; on an error {"error": describe(error),
// "traffic"} and exits 1.
export async function report(scenario, describe) {
  try {
    const result = await scenario();
    await Promise.all(pending);
    console.log(JSON.stringify({result, traffic}));
  } catch (error) {
    await Promise.allSettled(pending);
    console.log(JSON.stringify({error: {name: error?.constructor?.name, message: String(error),
                                        ...describe(error)},
                                traffic}));
    process.exitCode = 1;
  }
}
