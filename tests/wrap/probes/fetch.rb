# GETs each URL with Net::HTTP's defaults (https_proxy, SSL_CERT_FILE); prints "STATUS BODY".
require "net/http"
require "uri"

ARGV.each do |url|
  begin
    response = Net::HTTP.get_response(URI(url))
    puts "#{response.code} #{response.body.to_s.strip}"
  rescue StandardError => e
    puts "0 #{e.class}: #{e.message.tr("\n", " ")}"
  end
end
