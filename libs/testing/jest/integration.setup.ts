// Integration and end-to-end tests start real servers and move real data.
jest.setTimeout(300_000);
