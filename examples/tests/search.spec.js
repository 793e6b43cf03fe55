import { test, expect } from "appwright";

test("searching the catalogue lists matching products", async ({ device }) => {
  await device.getByText("Skip").tap();
  await device.getByText("Continue as guest").tap();
  await device.getByText("Search").fill("headphones");
  await expect(device.getByText("Wireless headphones")).toBeVisible();
});

test("a search with no match says so", async ({ device }) => {
  await device.getByText("Skip").tap();
  await device.getByText("Continue as guest").tap();
  await device.getByText("Search").fill("zzzz-no-such-product");
  await expect(device.getByText("No products found")).toBeVisible();
});
