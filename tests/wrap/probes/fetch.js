// GETs each URL with the global fetch (NODE_USE_ENV_PROXY, NODE_EXTRA_CA_CERTS); "STATUS BODY".
(async () => {
  for (const url of process.argv.slice(2)) {
    try {
      const response = await fetch(url);
      console.log(response.status + " " + (await response.text()).trim());
    } catch (error) {
      console.log("0 " + String(error.cause || error).replace(/\n/g, " "));
    }
  }
})();
