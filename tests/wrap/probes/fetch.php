<?php
// GETs each URL with the curl extension's defaults (https_proxy, curl.cainfo); "STATUS BODY".
foreach (array_slice($argv, 1) as $url) {
    $handle = curl_init($url);
    curl_setopt($handle, CURLOPT_RETURNTRANSFER, true);
    curl_setopt($handle, CURLOPT_TIMEOUT, 20);
    $body = curl_exec($handle);
    if ($body === false) {
        echo "0 " . curl_error($handle) . "\n";
    } else {
        echo curl_getinfo($handle, CURLINFO_RESPONSE_CODE) . " " . trim($body) . "\n";
    }
    curl_close($handle);
}
