# Secrets made for one run, for the scripts that run the gateway in the
# production profile: production refuses any secret published in the
# repository (config::PUBLISHED_SECRETS), so none can be written here.

# 32 URL-safe characters (24 random bytes).
random_key() { head -c 24 /dev/urandom | base64 | tr '+/' '-_'; }

# A Standard Webhooks secret of 32 random bytes.
random_whsec() { echo "whsec_$(head -c 32 /dev/urandom | base64)"; }

# Production requires the key that derives the callback secrets of API_KEYS
# keys; every process of the run (gateway, workers) shares this one.
CALLBACK_SIGNING_KEY=$(random_key)
export CALLBACK_SIGNING_KEY
